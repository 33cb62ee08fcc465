"""The training driver of a Slurm job, run by the sbatch script as an srun step on the head node:

    python -m launcher.backends.slurm_driver RUN_DIR --info FILE --timeout S --nodes NODE…

It connects to the job's Ray, waits until every node has joined with its CPUs/GPUs (failing with the names of the
nodes that did not), then trains the job in RUN_DIR/config.yaml. Exit code 0: completed; 75: stopped on request
after a checkpoint (the script requeues the job); 1: failed (summary.json says why).
"""

import argparse
import os
import sys
import time
from pathlib import Path

from belle.rundir import write_summary
from launcher.backends.ray_train import connect
from launcher.backends.slurm_node import RAY_ENV, node_resource, wait_for_head
from launcher.launch import EXIT_PREEMPTED, Preempted, graceful_stop, launch, summarise


def wait_for_nodes(nodes: list[str], cpus: int, gpus: int, timeout: float, since: float | None = None) -> None:
    """Poll Ray until each Slurm node in ``nodes`` has a live Ray node with ``cpus`` CPUs and ``gpus`` GPUs, at most
    ``timeout`` seconds from ``since`` (a time.monotonic(); default now)."""
    import ray

    deadline = (since or time.monotonic()) + timeout
    while True:
        joined = {}
        for node in ray.nodes():
            resources = node["Resources"] if node["Alive"] else {}
            joined |= {name: resources for name in nodes if node_resource(name) in resources}
        short = [n for n, r in joined.items() if r.get("CPU", 0) < cpus or r.get("GPU", 0) < gpus]
        missing = [n for n in nodes if n not in joined] + short
        if not missing:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"Ray on {', '.join(missing)} did not join with {cpus} CPUs and {gpus} GPUs within {timeout:g} s "
                f"({len(nodes) - len(missing)} of {len(nodes)} nodes did): see that node's lines in the job log; "
                "raise cluster.ray_join_timeout_s if nodes start slowly"
            )
        time.sleep(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--info", type=Path, required=True, help="file the Ray head writes its address to")
    parser.add_argument("--timeout", type=float, required=True, help="seconds to wait for every node")
    parser.add_argument("--nodes", nargs="+", required=True, help="the job's Slurm nodes, head first")
    args = parser.parse_args(argv)

    from launcher.compose import load_job

    job = load_job(args.run_dir)
    started = time.time()
    os.environ.update(RAY_ENV)
    import ray

    c = job.cluster
    with graceful_stop(args.run_dir):
        try:
            try:
                since = time.monotonic()
                connect(address=wait_for_head(args.info, args.timeout))
                wait_for_nodes(args.nodes, c.ray_cpus_per_node, c.gpus_per_node, args.timeout,
                               since)
            except (RuntimeError, ConnectionError) as exc:  # bring-up failed: nothing trained, the summary says why
                write_summary(args.run_dir, summarise(args.run_dir, started, str(exc)))
                raise
            print(f"Ray is up: {len(args.nodes)} nodes ({' '.join(args.nodes)}), {c.world_size} workers", flush=True)
            launch(job, args.run_dir)
        except Preempted as exc:
            print(exc, flush=True)
            return EXIT_PREEMPTED
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            return 1
        finally:
            ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
