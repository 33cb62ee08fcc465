"""Run the CLI in a subprocess: from a directory that is not the repository (``cli``), or as a real launch that
trains (``launcher``)."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
from launches import wait_until_ray_is_gone
from processes import MARK


@pytest.fixture(scope="module")
def slurm_is_up():
    """For the Slurm tests: the development Slurm (cluster/dev/start.sh) answers, else the module fails at once."""
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True) if shutil.which("scontrol") else None
    if ping is None or "UP" not in ping.stdout:
        pytest.fail("no Slurm answers here: start the development one with cluster/dev/start.sh")


@pytest.fixture
def cli(tmp_path):
    """``cli(*args)`` runs ``python -m launcher ARGS`` from an empty directory and returns the CompletedProcess."""
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()

    def _run(*args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
        return subprocess.run(
            [sys.executable, "-m", "launcher", *args], cwd=workdir, env=env, capture_output=True, text=True,
            timeout=300,
        )

    return _run


@pytest.fixture
def launcher(tmp_path, workers_env, monkeypatch):
    """``launcher(*args, log=path)`` starts ``python -m launcher ARGS`` (W&B offline, files under tmp_path) and
    returns the Popen; every test ends with no Ray process of its own left."""
    monkeypatch.setenv(MARK, uuid.uuid4().hex)
    monkeypatch.setenv("WANDB_MODE", "offline")
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):  # runs themselves land in the run dir
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.setenv("RAY_DEDUP_LOGS", "0")
    ray_temp = tempfile.mkdtemp(prefix="belle-test-ray-", dir="/tmp")  # short: Ray's unix sockets live in it
    started = []

    def _start(*args: str, log: Path) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-m", "launcher", *args, f"cluster.ray_temp_dir={ray_temp}"], cwd=tmp_path,
            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        started.append(process)
        return process

    yield _start
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    wait_until_ray_is_gone()
    shutil.rmtree(ray_temp, ignore_errors=True)
