"""cluster=slurm against a real Slurm (cluster/dev/start.sh: slurmctld + two slurmd nodes on this machine): Ray
brought up across the job's nodes, preemption with requeue and resume, a bring-up failure, sweeps, job records."""

import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
from processes import MARK, own_processes

from launcher.backends.slurm.jobs import ENDED

pytestmark = [pytest.mark.slurm, pytest.mark.ray, pytest.mark.slow, pytest.mark.usefixtures("slurm_is_up")]

SECRETS = {"WANDB_API_KEY": "wandb-secret-value-1234567890", "HF_TOKEN": "hf_secret_value_0987654321"}
STEPS = 16
"""The two-node job's steps: enough to be stopped part-way, once it has trained 3."""
RAY = ("raylet", "gcs_server", "ray::", "slurm.node", "slurm.driver")
# every CPU job of the demo on the two dev nodes: one worker per node, a few steps, W&B offline
SMALL = ("cluster=slurm", "cluster.cpu_workers_per_node=1", "monitor.log_every=1", "monitor.wandb_mode=offline",
         "cluster.ray_join_timeout_s=120")


@pytest.fixture
def submit(tmp_path, workers_env, monkeypatch):
    """``submit(*overrides)`` runs ``python -m launcher OVERRIDES`` (which returns once sbatch has), with job records
    and W&B files under tmp_path and two secrets in the environment; every job it started is cancelled at the end."""
    monkeypatch.setenv("BELLE_HOME", str(tmp_path / "belle-home"))
    monkeypatch.setenv(MARK, uuid.uuid4().hex)  # the job's processes inherit it through sbatch
    monkeypatch.setenv("WANDB_MODE", "offline")
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)

    def _submit(*overrides: str, multirun: bool = False) -> subprocess.CompletedProcess:
        out = subprocess.run([sys.executable, "-m", "launcher", *(["-m"] if multirun else []), *SMALL, *overrides],
                             cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        return out

    yield _submit
    for entry in _records():
        subprocess.run(["scancel", entry["job_id"]], capture_output=True)
    for entry in _records():
        _wait_for_end(entry["job_id"], timeout=60)
    _wait_until_no_ray_is_left()


def _quoted(value: str) -> str:
    """``value`` as a Hydra override value (single-quoted)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _records() -> list[dict]:
    from launcher.backends.slurm.jobs import records

    return records()


def _job_id(out: subprocess.CompletedProcess) -> str:
    return re.search(r"submitted  Slurm job (\d+)", out.stdout).group(1)


def _state(job_id: str) -> dict:
    from launcher.backends.slurm.jobs import slurm_state

    return slurm_state(job_id)


def _wait_for_end(job_id: str, timeout: float = 420) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = _state(job_id)
        if state.get("JobState") in ENDED:
            return state
        time.sleep(1)
    raise AssertionError(f"job {job_id} did not end within {timeout} s: {_state(job_id)}")


def _ray_left() -> list[str]:
    return own_processes(RAY)


def _wait_until_no_ray_is_left(timeout: float = 30) -> None:
    deadline = time.time() + timeout
    while _ray_left() and time.time() < deadline:
        time.sleep(0.5)
    assert not _ray_left(), _ray_left()


def _files_text(folder: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file() and p.stat().st_size
                     < 5_000_000)


def test_a_two_node_job_trains_is_preempted_requeues_and_resumes(submit, tmp_path, monkeypatch):
    """Submitted as a plain user might: no `ray` on PATH, Ray settings for a local Ray exported in the shell (the job
    sets its own), a name and a run dir full of shell syntax. Ray comes up on both nodes and trains; Slurm's warning
    before the time limit saves a checkpoint and requeues the job, whose second attempt resumes and completes: no
    step trained twice, one W&B run, Ray gone, no secret written to the run dir."""
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # would keep node2 from joining
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:9")  # nothing listens there
    name = "two nodes \"$(touch pwned)\" `touch pwned2`"
    run_dir = tmp_path / "runs" / "a b '$(touch pwned3)'"
    out = submit("cluster.nodes=2", f"train.max_steps={STEPS}", "train.save_every=100",
                 f"launcher.name={_quoted(name)}", f"launcher.run_dir={_quoted(str(run_dir))}")
    job_id = _job_id(out)
    log_file = run_dir / "slurm" / f"job-{job_id}.log"
    assert f"run dir    {run_dir}" in out.stdout and f"log        {log_file}" in out.stdout
    deadline = time.time() + 300
    while not (log_file.is_file() and f"step 3/{STEPS} " in log_file.read_text()):
        assert time.time() < deadline and _state(job_id).get("JobState") not in ENDED, "the job did not train"
        time.sleep(0.5)
    first = log_file.read_text()
    assert "node1: Ray head" in first and "node2: Ray worker" in first
    # joined, then trained
    assert first.index("Ray is up: 2 nodes (node1 node2), 2 workers") < first.index(f"step 1/{STEPS} ")
    # what Slurm's --signal=B:USR1@N does before the time limit, now
    subprocess.run(["scancel", "--batch", "--signal=USR1", job_id], check=True)
    deadline = time.time() + 300
    while _state(job_id).get("Restarts", "0") == "0" or _state(job_id).get("JobState") != "PENDING":
        assert time.time() < deadline and _state(job_id).get("JobState") not in ENDED, _state(job_id)
        time.sleep(0.5)
    subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], check=True)  # skip the requeue hold

    state = _wait_for_end(job_id)
    log = log_file.read_text()
    assert state["JobState"] == "COMPLETED" and state["Restarts"] == "1", log[-3000:]
    assert state["NodeList"] == "node[1-2]"
    saved = int(re.search(r"stopped on request after saving step (\d+)", log).group(1))
    assert 3 <= saved < STEPS and "attempt 2" in log and f"step {saved + 1}/{STEPS} " in log
    assert all(log.count(f"step {step}/{STEPS} ") == 1 for step in range(1, STEPS + 1)), "a step was trained twice"
    assert [r["step"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())] == \
        list(range(1, STEPS + 1))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == STEPS
    run_id = (run_dir / "wandb_id").read_text().strip()
    assert len(list((run_dir / "wandb").glob(f"offline-run-*-{run_id}"))) == 2  # one W&B run, two attempts
    _wait_until_no_ray_is_left()
    assert not list(tmp_path.rglob("pwned*")), "a value ran as a command"
    everything = _files_text(run_dir)
    assert not any(secret in everything for secret in SECRETS.values()), "a secret was written to the run dir"
    # the job's records, as `launcher.jobs` shows them
    listed = subprocess.run([sys.executable, "-m", "launcher.jobs", "list"], capture_output=True, text=True)
    assert re.search(rf"^{job_id}\s.*\sCOMPLETED\s+completed\s+{STEPS}\s", listed.stdout, re.M), listed.stdout
    status = subprocess.run([sys.executable, "-m", "launcher.jobs", "status", job_id], capture_output=True, text=True)
    assert "slurm      COMPLETED" in status.stdout and f"run        completed: {STEPS} steps" in status.stdout
    logs = subprocess.run([sys.executable, "-m", "launcher.jobs", "logs", job_id, "-n", "5"], capture_output=True,
                          text=True)
    assert f"job {job_id} attempt 2 ended with exit code 0" in logs.stdout, logs.stdout


def test_a_node_that_never_joins_fails_the_job_in_time_naming_it(submit, tmp_path):
    """node2's slurmd frozen: the job gets both nodes, but nothing starts on node2."""
    run_dir, timeout = tmp_path / "stuck", 20
    slurmd = next(p for p in psutil.process_iter(["cmdline"]) if (p.info["cmdline"] or [])[:3] == [
        "slurmd", "-N", "node2"])
    slurmd.suspend()
    try:
        job_id = _job_id(submit(f"launcher.run_dir={run_dir}", "cluster.nodes=2",
                                f"cluster.ray_join_timeout_s={timeout}"))
        started, summary = time.time(), run_dir / "summary.json"
        while not summary.is_file():
            assert time.time() - started < timeout + 60, "the job hung past its join timeout"
            time.sleep(0.5)
    finally:
        slurmd.resume()
    failure = json.loads(summary.read_text())
    assert failure["status"] == "failed" and failure["error"].startswith("Ray on node2 did not join"), failure
    assert f"within {timeout} s (1 of 2 nodes did)" in failure["error"]
    assert "cluster.ray_join_timeout_s" in failure["error"]
    assert _wait_for_end(job_id, timeout=120)["JobState"] == "FAILED"
    _wait_until_no_ray_is_left()


def test_a_job_cancelled_while_ray_comes_up_leaves_a_summary(submit, tmp_path):
    """scancel while the driver waits for node2 (its slurmd frozen): the driver stops waiting and says so."""
    run_dir = tmp_path / "cancelled"
    slurmd = next(p for p in psutil.process_iter(["cmdline"]) if (p.info["cmdline"] or [])[:3] == [
        "slurmd", "-N", "node2"])
    slurmd.suspend()
    try:
        job_id = _job_id(submit(f"launcher.run_dir={run_dir}", "cluster.nodes=2", "cluster.ray_join_timeout_s=300"))
        deadline = time.time() + 120
        while not list((run_dir / "slurm").glob("ray-head-*.json")):  # the head is up; the driver waits for node2
            assert time.time() < deadline, "the head never came up"
            time.sleep(0.5)
        subprocess.run(["scancel", job_id], check=True)
        summary, deadline = run_dir / "summary.json", time.time() + 30
        while not summary.is_file():
            assert time.time() < deadline, "no summary.json within 30 s of scancel"
            time.sleep(0.5)
    finally:
        slurmd.resume()
    assert json.loads(summary.read_text())["status"] == "preempted"
    assert _wait_for_end(job_id, timeout=120)["JobState"] == "CANCELLED"  # and not requeued
    _wait_until_no_ray_is_left()


def test_a_node_whose_ray_ends_fails_the_job_at_once_naming_it(submit, tmp_path):
    """A setting made in the job (cluster.setup) that keeps node2's Ray from joining: the driver stops waiting as
    soon as that node's Ray has ended, long before cluster.ray_join_timeout_s."""
    run_dir, timeout = tmp_path / "refused", 300
    job_id = _job_id(submit(f"launcher.run_dir={run_dir}", "cluster.nodes=2", f"cluster.ray_join_timeout_s={timeout}",
                            "cluster.setup=['export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0']"))
    state = _wait_for_end(job_id, timeout=timeout - 60)  # well inside the join timeout
    failure = json.loads((run_dir / "summary.json").read_text())
    assert state["JobState"] == "FAILED" and failure["status"] == "failed", failure
    assert failure["error"].startswith("Ray on node2 ended with exit code"), failure
    assert "see that node's lines in the job log" in failure["error"]
    _wait_until_no_ray_is_left()


def test_a_sweep_submits_one_waiting_job_per_point_records_them_and_cancels_them(submit, tmp_path):
    """Each point a job of its own (held for an hour by --begin, so none runs), recorded in sweep.json and the job
    records; a point's run dir is refused to another launch while its job waits; `launcher.jobs cancel` ends it."""
    sweep_dir, later = tmp_path / "lr-sweep", "cluster.sbatch_extra=['--begin=now+3600']"
    out = submit(f"launcher.run_dir={sweep_dir}", "train.max_steps=6", "optim.lr=1e-3,2e-3", later, multirun=True)
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    assert [p["point"] for p in sweep["points"]] == [0, 1] and out.stdout.count("submitted  Slurm job") == 2
    listed = subprocess.run([sys.executable, "-m", "launcher.jobs", "list"], capture_output=True, text=True)
    for point in sweep["points"]:
        assert _state(point["job_id"])["JobState"] == "PENDING"
        assert re.search(rf"^{point['job_id']}\s+lr-sweep-{point['point']}\s+PENDING\s", listed.stdout, re.M), \
            listed.stdout
        run_dir = Path(point["run_dir"])
        assert run_dir == sweep_dir / str(point["point"])
        assert f"optim.lr={(0.001, 0.002)[point['point']]}" in point["overrides"]
        assert "wandb_group: lr-sweep" in (run_dir / "config.yaml").read_text()

    first = sweep["points"][0]
    again = subprocess.run([sys.executable, "-m", "launcher", *SMALL, f"launcher.run_dir={first['run_dir']}"],
                           capture_output=True, text=True)
    assert again.returncode == 2 and f"is in use by Slurm job {first['job_id']} (PENDING)" in again.stderr, \
        again.stderr
    for point in sweep["points"]:
        cancel = subprocess.run([sys.executable, "-m", "launcher.jobs", "cancel", point["job_id"]],
                                capture_output=True, text=True)
        assert cancel.returncode == 0 and f"cancelled Slurm job {point['job_id']}" in cancel.stdout
        assert _wait_for_end(point["job_id"], timeout=30)["JobState"] == "CANCELLED"
    missing = subprocess.run([sys.executable, "-m", "launcher.jobs", "status", "nope"], capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.startswith("error: no job 'nope' was submitted from here")
