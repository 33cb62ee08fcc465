"""Real launches in the tests: ``python -m launcher`` as a subprocess (the ``launcher`` fixture of
tests/launcher/conftest.py), waited on by condition, and the check that none of a test's Ray processes outlives it."""

import json
import subprocess
import time
from pathlib import Path

from processes import own_processes

LEFTOVERS = ("raylet", "gcs_server", "ray::", "wandb-core", "ray/autoscaler/_private/monitor.py",
             "ray/_private/log_monitor.py", "ray/dashboard/")
"""Processes a finished run must not leave behind."""


def ray_processes() -> list[str]:
    """"pid command line" of the live Ray and wandb processes this test started."""
    return own_processes(LEFTOVERS)


def wait_until_ray_is_gone(timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while ray_processes() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not ray_processes(), "Ray or wandb processes outlived the run"


def finish(process: subprocess.Popen, log: Path, timeout: float = 400) -> str:
    """The launch's output once it has exited 0 (else the assertion shows its tail)."""
    process.wait(timeout=timeout)
    output = log.read_text()
    assert process.returncode == 0, output[-3000:]
    return output


def metrics(run_dir: Path) -> list[dict]:
    """The records of the run's metrics.jsonl (none before its first logged step)."""
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
