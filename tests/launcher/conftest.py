"""Run the CLI in a subprocess, from a directory that is not the repository."""

import os
import subprocess
import sys

import pytest


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
