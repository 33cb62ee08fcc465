"""Start a planned job on its Ray, then record how it ended: summary.json and loss.png in the run directory.

Inside a Slurm job the sbatch script runs one attempt on the head node, once the nodes' Ray is starting:

    python -m launcher.launch RUN_DIR --slurm-info FILE --timeout S --nodes NODE…

It joins the job's Ray (waiting until every node has joined with its CPUs/GPUs, failing with the names of those that
did not), then trains the job in RUN_DIR/config.yaml. Exit code 0: completed; 75: stopped on request after a
checkpoint (the script requeues the job); 1: failed (summary.json says why).
"""

import argparse
import json
import signal
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

from belle import stop
from belle.config import JobConfig
from belle.rundir import DATA_CACHE, read_summary, write_atomic, write_summary
from launcher.backends import Outcome

BACKENDS = {"spmd": "launcher.backends.spmd", "roles": "launcher.backends.ray_roles"}
"""A recipe's KIND → the backend module whose ``run(job, run_dir) -> Outcome`` trains it on the connected Ray."""
EXIT_PREEMPTED = 75
"""Exit code of a run that stopped on request (saved, resumable): the sbatch script requeues on it."""
SUBMITTER_EXIT_S = 120
"""Seconds a Slurm job's driver waits for the run directory's lock (the submitting launcher exits after sbatch)."""


RUNNING = ("no outcome recorded yet: if no launcher runs this run any more, it ended abruptly (killed, or its Ray "
           "died; see its console); rerun the same command to resume")
"""The error summary.json holds while an attempt runs."""


class Preempted(RuntimeError):
    """The run saved a checkpoint and stopped on request; running it again resumes it."""


@contextmanager
def graceful_stop(run_dir: Path):
    """One attempt of a run: SIGTERM (Slurm's preemption and time limit, `kill`) and SIGUSR1 (Slurm's warning before
    the limit) ask it to save a checkpoint and stop (belle.stop), instead of killing it mid-step. A request left by
    an earlier attempt is forgotten first."""
    stop.reset(run_dir)

    def ask(signum, _frame) -> None:
        name = signal.Signals(signum).name
        print(f"{name}: saving a checkpoint, then stopping", flush=True)
        stop.request(run_dir, name)

    previous = {s: signal.signal(s, ask) for s in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def summarise(run_dir: Path, started: float, outcome: Outcome) -> dict:
    """What summary.json holds for an attempt that began at ``started`` and ended as ``outcome`` says: failed (with
    its error), preempted (stopped on request after a checkpoint) or completed, with the last logged loss and eval
    loss, the restarts (None: not counted) and a note (why it stopped early on its own)."""
    from belle.monitor.metrics import read_metrics

    stopped = stop.stopped_at(run_dir)
    logged = read_metrics(run_dir)
    losses = [r for r in logged if r.get("loss") is not None]
    evals = [r for r in logged if r.get("eval_loss") is not None]
    return {
        "status": "failed" if outcome.error else "preempted" if stopped is not None else "completed",
        "steps": stopped if stopped is not None else max((r["step"] for r in logged if "step" in r), default=0),
        "final_loss": losses[-1]["loss"] if losses else None,
        "eval_loss": evals[-1]["eval_loss"] if evals else None,
        "wall_time_s": round(time.time() - started, 1),
        "restarts": outcome.restarts,
        "note": outcome.note,
        "error": outcome.error,
    }


def prepare_data(job: JobConfig):
    """The job's data cache (belle.data.prepare): reused when one matches, else prepared here over this machine's
    cores, once per job and before any worker starts. Prints where it is and what it holds."""
    from belle.data.prepare import prepare
    from belle.model.load import load_tokenizer

    prepared = prepare(job.data, load_tokenizer(job.model))
    print(prepared.describe(), flush=True)
    return prepared


def check_steps(job: JobConfig, splits: dict) -> None:
    """Refuse prepared data that gives the run no optimizer step (the workers would find out only after Ray)."""
    from belle.data.records import DataError
    from belle.strategy import optimizer_steps

    rows, held_out = splits["train"]["rows"], splits["eval"]["rows"]
    s = job.strategy
    if optimizer_steps(rows, s, job.cluster.world_size, job.train.epochs, job.train.max_steps) == 0:
        raise DataError(
            f"the prepared data has {rows} training rows ({held_out} more held out by data.eval_samples="
            f"{job.data.eval_samples}), too few for one global batch of strategy.global_batch={s.global_batch}: "
            "set data.eval_samples or strategy.global_batch lower, or train.epochs higher"
        )


def data_record(prepared) -> dict:
    """What data-cache.json records of the prepared data a run trains on: its folder, each split's SHA-256 and the
    data files (path, size, mtime) it was made from."""
    splits = prepared.meta["splits"]
    return {"folder": str(prepared.folder), "sha256": {split: counts.get("sha256") for split, counts in splits.items()},
            "files": prepared.meta["key"]["files"]}


def _same_rows(before: dict, now: dict) -> bool:
    """Whether two data-cache.json records name the same prepared rows: by their digests, or by folder where the
    earlier has none (recorded before the rows had one)."""
    digests = before.get("sha256") or {}
    if digests and all(digests.values()):
        return digests == now["sha256"]
    return before["folder"] == now["folder"]


def _what_changed(before: dict, now: dict) -> str:
    """The first data file added, removed or changed (size, mtime) between two records, or that the rows did."""
    was, is_ = ({path: stat for path, *stat in record.get("files", [])} for record in (before, now))
    for path in sorted(was.keys() | is_.keys()):
        if path not in was:
            return f"{path} was added"
        if path not in is_:
            return f"{path} was removed"
        if was[path] != is_[path]:
            return f"{path} has changed"
    return "the prepared rows have changed"


def check_same_data(job: JobConfig, run_dir: Path, prepared) -> None:
    """Refuse to resume a checkpoint on other data than the run trained on (data-cache.json): its data position
    would continue in other rows. The same rows from touched or copied files resume."""
    from belle import checkpoint
    from belle.data.records import DataError

    pointer, latest = Path(run_dir) / DATA_CACHE, checkpoint.latest(run_dir)
    if latest is None or not pointer.is_file():
        return
    before, now = json.loads(pointer.read_text()), data_record(prepared)
    if _same_rows(before, now):
        return
    raise DataError(
        f"checkpoint {latest.name} was trained on data.path={job.data.path} as it was then, but "
        f"{_what_changed(before, now)} since: put "
        "the data files back as they were to resume, or start a new run on the new data (launcher.run_dir=<a new "
        "folder>)"
    )


def check_roles_resume(job: JobConfig, run_dir: Path) -> None:
    """Before any worker starts: the run's latest checkpoint resumes on the planned ranks and ZeRO stages of a roles
    recipe (PPO), with its frozen model folders unchanged (belle.rlhf.state.check_resume)."""
    from belle import checkpoint
    from belle.rlhf.planner import placement_of
    from belle.rlhf.state import check_resume

    folder = checkpoint.latest(run_dir)
    if folder is not None:
        check_resume(job, folder, {role: pool.workers for pool in placement_of(job).pools for role in pool.roles})


def launch(job: JobConfig, run_dir: Path) -> dict:
    """Prepare the data (unless cached), train ``job`` (resuming the run in ``run_dir`` if there is one) and write
    its summary; a completed run is never trained again. Call it inside ``graceful_stop``."""
    from importlib import import_module

    from belle import checkpoint
    from belle.monitor.plot import plot_loss
    from belle.recipes import recipe
    from launcher.backends.ray_cluster import ray_for

    previous = read_summary(run_dir)
    if previous and previous["status"] == "completed":
        print(f"{run_dir} holds a completed run ({previous['steps']} steps): nothing to do")
        return previous
    kind = recipe(job.method.name).KIND
    run = import_module(BACKENDS[kind]).run
    started = time.time()
    try:
        if kind == "spmd":  # a roles recipe's controller reads its prompts itself, in this process
            checkpoint.latest(run_dir)  # checkpoints none of which resumes are refused here, before any worker
            prepared = prepare_data(job)
            check_steps(job, prepared.meta["splits"])
            check_same_data(job, run_dir, prepared)
            write_atomic(Path(run_dir) / DATA_CACHE, json.dumps(data_record(prepared)) + "\n")
        else:
            check_roles_resume(job, run_dir)
    except Exception as exc:  # bad data or data.cache_dir, a checkpoint it cannot resume: nothing started
        write_summary(run_dir, summarise(run_dir, started, Outcome(str(exc) or type(exc).__name__)))
        raise
    # written once the steps before Ray succeeded; replaced when this attempt ends, left as it is if the launcher
    # dies first (SIGKILL, Ray's GCS gone)
    write_summary(run_dir, summarise(run_dir, started, Outcome()) | {"status": "running", "error": RUNNING})
    with ray_for(job):
        outcome = run(job, run_dir)
    summary = summarise(run_dir, started, outcome)
    write_summary(run_dir, summary)
    plot = plot_loss(run_dir)
    print(f"{summary['status']}: {summary['steps']} steps, loss {summary['final_loss']}, "
          f"{summary['wall_time_s']} s; run dir {run_dir}" + (f", loss curve {plot}" if plot else "")
          + (f"; {summary['note']}" if summary["note"] else ""))
    if summary["status"] == "preempted":
        raise Preempted(f"the run stopped on request after saving step {summary['steps']}: run it again to resume")
    if summary["status"] != "completed":
        raise RuntimeError(f"the run failed: {summary['error']} (see {run_dir})")
    return summary


def main(argv: list[str] | None = None) -> int:
    """One attempt of a Slurm job's run (see the module's docstring); returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m launcher.launch", description=__doc__.split("\n\n")[1])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--slurm-info", type=Path, required=True, help="file the Ray head writes its address to")
    parser.add_argument("--timeout", type=float, required=True, help="seconds to wait for every node")
    parser.add_argument("--nodes", nargs="+", required=True, help="the job's Slurm nodes, head first")
    args = parser.parse_args(argv)

    from launcher.backends.slurm.ray_join import StopRequested, join
    from launcher.compose import load_job
    from launcher.rundir import held

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
                    write_summary(args.run_dir, summarise(args.run_dir, started, Outcome()) | {"status": "preempted"})
                    print("stopped on request while Ray was coming up", flush=True)
                    return EXIT_PREEMPTED
                write_summary(args.run_dir, summarise(args.run_dir, started, Outcome(str(exc))))  # bring-up failed
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
