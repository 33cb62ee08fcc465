"""Graceful stop through the run directory: the launcher asks a running job to save and exit (Slurm's warning
signal, SIGTERM), the recipe answers once its checkpoint is complete.

    <run_dir>/stop-requested   written by whoever asks (the sbatch script's trap, the driver's signal handler)
    <run_dir>/stopped          the recipe's answer: the request renamed, holding the step it saved

A file rather than a message, so that the request reaches every worker on every node the same way and survives
the process that made it; every rank checks it each step and all stop at the same step.
"""

import json
from pathlib import Path

from belle.rundir import STOP_REQUEST as REQUEST
from belle.rundir import STOPPED as ANSWER
from belle.rundir import write_atomic


def request(run_dir: Path, reason: str) -> None:
    """Ask the run in ``run_dir`` to save a checkpoint and stop."""
    (Path(run_dir) / REQUEST).write_text(reason + "\n")


def requested(run_dir: Path) -> bool:
    """Whether a stop was asked for (checked by every rank, every step)."""
    return (Path(run_dir) / REQUEST).exists()


def acknowledge(run_dir: Path, step: int) -> None:
    """Rank 0, after the checkpoint of ``step`` is complete: turn the request into the answer."""
    run_dir = Path(run_dir)
    reason = (run_dir / REQUEST).read_text().strip() if (run_dir / REQUEST).exists() else ""
    write_atomic(run_dir / ANSWER, json.dumps({"step": step, "reason": reason}) + "\n")
    (run_dir / REQUEST).unlink(missing_ok=True)


def stopped_at(run_dir: Path) -> int | None:
    """The step the run saved before it stopped on request, or None if it did not stop on request."""
    answer = Path(run_dir) / ANSWER
    return json.loads(answer.read_text())["step"] if answer.is_file() else None


def reset(run_dir: Path) -> None:
    """Start of an attempt: forget the previous attempt's request and answer."""
    for name in (REQUEST, ANSWER):
        (Path(run_dir) / name).unlink(missing_ok=True)
