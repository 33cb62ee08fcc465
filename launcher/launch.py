"""Start a planned job, then record how it ended: summary.json and loss.png in the run directory."""

import json
import signal
import time
from contextlib import contextmanager
from pathlib import Path

from belle import stop
from belle.config import JobConfig
from launcher.rundir import write_atomic

EXIT_PREEMPTED = 75
"""Exit code of a run that stopped on request (saved, resumable): the sbatch script requeues on it."""


class Preempted(RuntimeError):
    """The run saved a checkpoint and stopped on request; running it again resumes it."""


def read_summary(run_dir: Path) -> dict | None:
    """The run's summary.json, or None before its first attempt ended."""
    path = run_dir / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


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


def summarise(run_dir: Path, started: float, error: str | None) -> dict:
    """What summary.json holds for an attempt that began at ``started``: failed (with ``error``), preempted (stopped
    on request after a checkpoint) or completed, with the last logged loss and eval loss."""
    from belle.monitor.metrics import read_metrics

    stopped = stop.stopped_at(run_dir)
    logged = read_metrics(run_dir)
    losses = [r for r in logged if r.get("loss") is not None]
    evals = [r for r in logged if r.get("eval_loss") is not None]
    return {
        "status": "failed" if error else "preempted" if stopped is not None else "completed",
        "steps": stopped if stopped is not None else losses[-1]["step"] if losses else 0,
        "final_loss": losses[-1]["loss"] if losses else None,
        "eval_loss": evals[-1]["eval_loss"] if evals else None,
        "wall_time_s": round(time.time() - started, 1),
        "error": error,
    }


def write_summary(run_dir: Path, summary: dict) -> None:
    """summary.json, written whole."""
    write_atomic(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")


def prepare_data(job: JobConfig):
    """The job's data cache (belle.data.prepare): reused when one matches, else prepared here over this machine's
    cores, once per job and before any worker starts. Prints where it is and what it holds."""
    from belle.data.prepare import prepare
    from belle.model.load import load_tokenizer

    prepared = prepare(job.data, load_tokenizer(job.model))
    print(prepared.describe(), flush=True)
    return prepared


def launch(job: JobConfig, run_dir: Path) -> dict:
    """Prepare the data (unless cached), train ``job`` (resuming the run in ``run_dir`` if there is one) and write
    its summary; a completed run is never trained again. Call it inside ``graceful_stop``."""
    from belle.data.records import DataError
    from belle.monitor.plot import plot_loss
    from launcher.backends.ray_train import run_on_ray

    previous = read_summary(run_dir)
    if previous and previous["status"] == "completed":
        print(f"{run_dir} holds a completed run ({previous['steps']} steps): nothing to do")
        return previous
    started = time.time()
    try:
        prepare_data(job)
    except DataError as exc:  # a bad record: nothing is started, the summary says where
        write_summary(run_dir, summarise(run_dir, started, str(exc)))
        raise RuntimeError(str(exc)) from None
    summary = summarise(run_dir, started, run_on_ray(job, run_dir))
    write_summary(run_dir, summary)
    plot = plot_loss(run_dir)
    print(f"{summary['status']}: {summary['steps']} steps, loss {summary['final_loss']}, "
          f"{summary['wall_time_s']} s; run dir {run_dir}" + (f", loss curve {plot}" if plot else ""))
    if summary["status"] == "preempted":
        raise Preempted(f"the run stopped on request after saving step {summary['steps']}: run it again to resume")
    if summary["status"] != "completed":
        raise RuntimeError(f"the run failed: {summary['error']} (see {run_dir})")
    return summary
