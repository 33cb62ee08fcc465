"""Start a planned job on its Ray, then record how it ended: summary.json and loss.png in the run directory.

Exit codes of a run: 0 completed; 75 (EXIT_PREEMPTED) stopped on request after a checkpoint (a Slurm job requeues
on it); 1 failed (summary.json says why). Inside a Slurm job, launcher.backends.slurm.driver runs the attempt.
"""

import signal
import time
from contextlib import contextmanager
from pathlib import Path

from belle import stop
from belle.config import JobConfig
from belle.rundir import read_summary, results, write_summary
from launcher.backends import Outcome

BACKENDS = {"spmd": "launcher.backends.spmd", "driver": "launcher.backends.pools"}
"""A recipe's KIND → the backend module whose ``run(job, run_dir) -> Outcome`` trains it on the connected Ray."""
EXIT_PREEMPTED = 75
"""Exit code of a run that stopped on request (saved, resumable): the sbatch script requeues on it."""


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


def summarise(job: JobConfig, run_dir: Path, started: float, outcome: Outcome) -> dict:
    """What summary.json holds for an attempt that began at ``started`` and ended as ``outcome`` says: failed (with
    its error), preempted (stopped on request after a checkpoint) or completed, the steps, the restarts (None: not
    counted), a note (why it stopped early on its own) and the recipe's results: the last logged value of each
    metric its SUMMARY names."""
    from belle.monitor.metrics import read_metrics
    from belle.recipes import recipe

    stopped = stop.stopped_at(run_dir)
    logged = read_metrics(run_dir)
    lifted = {}
    for key, metric in recipe(job.method.name).SUMMARY.items():
        values = [r[metric] for r in logged if r.get(metric) is not None]
        lifted[key] = values[-1] if values else None
    return {
        "status": "failed" if outcome.error else "preempted" if stopped is not None else "completed",
        "steps": stopped if stopped is not None else max((r["step"] for r in logged if "step" in r), default=0),
        **lifted,
        "wall_time_s": round(time.time() - started, 1),
        "restarts": outcome.restarts,
        "note": outcome.note,
        "error": outcome.error,
    }


def launch(job: JobConfig, run_dir: Path) -> dict:
    """Prepare what the recipe needs before its workers start (its face's ``prepare``), train ``job`` (resuming
    the run in ``run_dir`` if there is one) and write its summary; a completed run is never trained again. Call it
    inside ``graceful_stop``."""
    from importlib import import_module

    from belle.monitor.plot import plot_loss
    from belle.recipes import recipe
    from launcher.backends.ray_cluster import ray_for

    previous = read_summary(run_dir)
    if previous and previous["status"] == "completed":
        print(f"{run_dir} holds a completed run ({previous['steps']} steps): nothing to do")
        return previous
    face = recipe(job.method.name)
    run = import_module(BACKENDS[face.KIND]).run
    started = time.time()
    try:
        face.prepare(job, run_dir)
    except Exception as exc:  # bad data or data.cache_dir, a checkpoint it cannot resume: nothing started
        write_summary(run_dir, summarise(job, run_dir, started, Outcome(str(exc) or type(exc).__name__)))
        raise
    # written once the steps before Ray succeeded; replaced when this attempt ends, left as it is if the launcher
    # dies first (SIGKILL, Ray's GCS gone)
    write_summary(run_dir, summarise(job, run_dir, started, Outcome()) | {"status": "running", "error": RUNNING})
    with ray_for(job):
        outcome = run(job, run_dir)
    summary = summarise(job, run_dir, started, outcome)
    write_summary(run_dir, summary)
    plot = plot_loss(run_dir)
    told = ", ".join(part for part in (f"{summary['steps']} steps", results(summary), f"{summary['wall_time_s']} s")
                     if part)
    print(f"{summary['status']}: {told}; run dir {run_dir}" + (f", loss curve {plot}" if plot else "")
          + (f"; {summary['note']}" if summary["note"] else ""))
    if summary["status"] == "preempted":
        raise Preempted(f"the run stopped on request after saving step {summary['steps']}: run it again to resume")
    if summary["status"] != "completed":
        raise RuntimeError(f"the run failed: {summary['error']} (see {run_dir})")
    return summary
