"""One attempt of a Slurm job's run, on its head node once the nodes' Ray is starting (the sbatch script runs it):

    python -m launcher.backends.slurm.driver RUN_DIR --slurm-info FILE --timeout S --nodes NODE…

It joins the job's Ray (waiting until every node has joined with its CPUs/GPUs, failing with the names of those that
did not), then trains the job in RUN_DIR/config.yaml. Exit code 0: completed; 75: stopped on request after a
checkpoint (the script requeues the job); 1: failed (summary.json says why).
"""

import argparse
import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from belle import stop
from belle.rundir import write_summary
from launcher.backends import Outcome
from launcher.launch import EXIT_PREEMPTED, Preempted, graceful_stop, launch, summarise

SUBMITTER_EXIT_S = 120
"""Seconds the driver waits for the run directory's lock (the submitting launcher exits after sbatch)."""


def main(argv: list[str] | None = None) -> int:
    """One attempt of a Slurm job's run (see the module's docstring); returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m launcher.backends.slurm.driver",
                                     description=__doc__.split("\n\n")[1])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--slurm-info", type=Path, required=True, help="file the Ray head writes its address to")
    parser.add_argument("--timeout", type=float, required=True, help="seconds to wait for every node")
    parser.add_argument("--nodes", nargs="+", required=True, help="the job's Slurm nodes, head first")
    args = parser.parse_args(argv)

    from launcher.backends.slurm.ray_join import StopRequested, join
    from launcher.claim import held
    from launcher.compose import load_job

    job = load_job(args.run_dir)
    c = job.cluster
    started = time.time()
    lock = ExitStack()
    try:  # the submitting launcher holds the run directory until it has seen sbatch through and exits
        lock.enter_context(held(args.run_dir, wait_s=SUBMITTER_EXIT_S))
    except ValueError as exc:  # another launcher runs it: write nothing there
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    with lock, graceful_stop(args.run_dir):
        try:
            try:
                join(args.slurm_info, args.nodes, c.ray_cpus_per_node, c.gpus_per_node, args.timeout,
                     stopping=lambda: stop.requested(args.run_dir))
            except (StopRequested, RuntimeError, ConnectionError, ValueError) as exc:
                if stop.requested(args.run_dir):  # preempted or cancelled while Ray came up (its nodes going too)
                    stopped = summarise(job, args.run_dir, started, Outcome()) | {"status": "preempted"}
                    write_summary(args.run_dir, stopped)
                    print("stopped on request while Ray was coming up", flush=True)
                    if isinstance(exc, StopRequested) and exc.blocked:  # ray.shutdown would wait on that thread
                        sys.stderr.flush()
                        os._exit(EXIT_PREEMPTED)
                    return EXIT_PREEMPTED
                write_summary(args.run_dir, summarise(job, args.run_dir, started, Outcome(str(exc))))  # bring-up failed
                raise RuntimeError(str(exc)) from None
            print(f"Ray is up: {len(args.nodes)} nodes ({' '.join(args.nodes)}), {c.world_size} workers", flush=True)
            launch(job, args.run_dir)
        except Preempted as exc:
            print(exc, flush=True)
            return EXIT_PREEMPTED
        except (RuntimeError, ValueError) as exc:  # ValueError: bad data, found when the job prepared it
            print(f"error: {exc}", file=sys.stderr, flush=True)
            return 1
        finally:
            import ray

            ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
