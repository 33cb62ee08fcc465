"""cluster=slurm against the real dev Slurm (cluster/dev/start.sh: two nodes): a job Slurm could never start is
refused before anything is queued, and a failing cluster.setup line ends its job at once, naming the line."""

import json
import subprocess
import sys
import time
import uuid

import pytest
from processes import MARK

from launcher.backends.slurm.jobs import ENDED, records, slurm_state

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_is_up")]


@pytest.fixture
def launch(tmp_path, workers_env, monkeypatch):
    """``launch(*overrides)`` runs ``python -m launcher cluster=slurm`` with a job name of its own, job records under
    tmp_path → (the finished process, the job name); a job it queued is cancelled at the end."""
    monkeypatch.setenv("BELLE_HOME", str(tmp_path / "belle-home"))
    monkeypatch.setenv(MARK, uuid.uuid4().hex)
    monkeypatch.setenv("WANDB_MODE", "offline")
    name = f"refusal-{uuid.uuid4().hex[:8]}"

    def _launch(*overrides: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "launcher", "cluster=slurm", f"launcher.name={name}",
                               "cluster.cpu_workers_per_node=1", *overrides],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)

    yield _launch, name
    for job in _queued(name):
        subprocess.run(["scancel", job], capture_output=True)


def _queued(name: str) -> list[str]:
    """Ids of the jobs named ``name`` that Slurm holds (pending, running or just ended)."""
    done = subprocess.run(["squeue", "-h", "-t", "all", "-n", name, "-o", "%i"], capture_output=True, text=True,
                          check=True)
    return done.stdout.split()


def test_more_nodes_than_the_partition_has_is_refused_before_anything_is_queued(launch, tmp_path):
    run, name = launch
    started = time.monotonic()
    done = run("cluster.nodes=3", "strategy.global_batch=6", f"launcher.run_dir={tmp_path / 'run'}")
    wall = time.monotonic() - started
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [
        "error: Slurm would not run this job: Requested node configuration is not available (sbatch --test-only; "
        "cluster.nodes=3, 1 CPUs and 0 GPUs per node, cluster.partition=<default>): set cluster.nodes, "
        "cluster.partition (or cluster.account / qos / constraint) and cluster.gpus_per_node / cpus_per_node to what "
        "`sinfo -N -l` shows"
    ]
    assert "submitted" not in done.stdout
    assert _queued(name) == [] and records() == [], "nothing queued, nothing recorded"
    assert not (tmp_path / "run" / "slurm" / "job.sbatch").exists()
    assert wall < 120, f"refused after {wall:.0f} s"


def _wait_for_end(job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while (state := slurm_state(job_id)).get("JobState") not in ENDED:
        assert time.monotonic() < deadline, f"job {job_id} did not end within {timeout} s: {state}"
        time.sleep(0.5)
    return state


@pytest.mark.slow
def test_a_failing_setup_line_ends_the_job_at_once_naming_it(launch, tmp_path):
    run, _ = launch
    run_dir = tmp_path / "run"
    done = run("cluster.setup=['export TOKENIZERS_PARALLELISM=false','source /nope/bin/activate','echo after']",
               f"launcher.run_dir={run_dir}")
    assert done.returncode == 0, done.stderr[-2000:]
    (entry,) = records()
    state = _wait_for_end(entry["job_id"])
    log = (run_dir / "slurm" / f"job-{entry['job_id']}.log").read_text()
    assert "=== cluster.setup line 2 failed with exit code 1: source /nope/bin/activate\n" in log, log
    assert "after" not in log.splitlines() and "Ray head" not in log, log
    assert state["JobState"] == "FAILED" and state["ExitCode"] == "1:0", state
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["error"] == ("cluster.setup line 2 failed with exit code 1: source /nope/bin/activate: fix the "
                                "line or remove it from cluster.setup")
