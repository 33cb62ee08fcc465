"""Real launches in the tests: ``python -m launcher`` as a subprocess (the ``launcher`` fixture of
tests/launcher/conftest.py), waited on by condition, and the check that none of a test's Ray processes outlives it."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
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


@contextlib.contextmanager
def user_ray_head(monkeypatch):
    """A user's Ray cluster on this machine (``ray start --head``, 2 CPUs, on 127.0.0.1): yields its port; only its
    processes are stopped afterwards (``ray stop`` would stop every Ray on the machine)."""
    from distributed import free_port

    port = free_port()
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # the head and the driver on 127.0.0.1
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    temp = tempfile.mkdtemp(prefix="belle-test-ray-", dir="/tmp")  # short: Ray's unix sockets live in it
    subprocess.run(["ray", "start", "--head", f"--port={port}", "--num-cpus=2", f"--temp-dir={temp}",
                    "--include-dashboard=false", "--disable-usage-stats"], env=dict(os.environ), check=True,
                   capture_output=True)
    try:
        yield port
    finally:
        for line in ray_processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line.split()[0]), signal.SIGKILL)
        wait_until_ray_is_gone()
        shutil.rmtree(temp, ignore_errors=True)
