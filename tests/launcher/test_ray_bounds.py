"""cluster=ray against a real Ray head started here (one for the module, bound to loopback, 2 CPUs): every wait on
it is bounded. A loopback address Ray would dial elsewhere, and a job too large for the cluster, are refused in one
line before anything is written or any driver joins; a worker group that cannot be placed fails within
cluster.placement_timeout_s and leaves no worker actor behind."""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import pytest
from distributed import free_port
from processes import MARK, own_processes

pytestmark = pytest.mark.ray

HEAD_CPUS = 2
TRAIN_ACTORS = ("PoolWorker",)
"""Process titles of the training workers' actors (ray::PoolWorker…)."""


@pytest.fixture(scope="module")
def head():
    """The port of a Ray head on 127.0.0.1 (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: it listens on loopback only), its
    processes marked with this module's MARK; afterwards every process under that mark is stopped."""
    port, temp = free_port(), tempfile.mkdtemp(prefix="belle-test-ray-", dir="/tmp")  # short: unix sockets
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(MARK, uuid.uuid4().hex)
        env = os.environ | {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}
        subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--node-ip-address=127.0.0.1",
                        f"--port={port}", f"--num-cpus={HEAD_CPUS}", f"--temp-dir={temp}",
                        "--include-dashboard=false", "--disable-usage-stats"], env=env, check=True, capture_output=True)
        try:
            yield port
        finally:  # this head only (`ray stop` would stop every Ray on the machine)
            for line in own_processes(("ray", "gcs_server", "raylet")):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(line.split()[0]), signal.SIGKILL)
            _wait_for(lambda: not own_processes(("ray", "gcs_server", "raylet")), 30, "the head's processes to end")
            shutil.rmtree(temp, ignore_errors=True)


def _wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout_s} s for {what}"
        time.sleep(0.2)


def _launch(tmp_path, *args: str, loopback: bool = True, timeout: float = 180) -> tuple[subprocess.CompletedProcess,
                                                                                        float]:
    """``python -m launcher cluster=ray ARGS`` (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 when ``loopback``) → the finished
    process and its wall time."""
    env = os.environ | {"RAY_AUTH_MODE": "disabled", "WANDB_MODE": "offline", "TMPDIR": str(tmp_path)}
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    env.pop("RAY_ADDRESS", None)
    if loopback:
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "launcher", "cluster=ray", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return done, time.monotonic() - started


def _drivers(port: int) -> int:
    """Drivers that have ever joined the head (its GCS's job table)."""
    from ray._raylet import InnerGcsClient

    return len(InnerGcsClient.standalone(f"127.0.0.1:{port}", None, 10_000).get_all_job_info(timeout=10))


def test_a_loopback_head_that_ray_would_dial_elsewhere_is_refused_in_one_line(head, tmp_path):
    """Without RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 ray.init dials 127.0.0.1:PORT as this machine's address, where a
    loopback head does not listen, and retries for minutes; the launcher names the fixes instead."""
    from ray._private.services import node_ip_address_from_perspective

    ip = node_ip_address_from_perspective()
    if ip == "127.0.0.1":
        pytest.skip("this machine has no address besides loopback: Ray dials 127.0.0.1 as it is")
    drivers, run_dir = _drivers(head), tmp_path / "run"
    done, wall = _launch(tmp_path, f"cluster.address=127.0.0.1:{head}", f"launcher.run_dir={run_dir}",
                         loopback=False)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [
        f"error: cluster.address=127.0.0.1:{head}: Ray dials a loopback address as this machine's {ip}:{head}, where "
        "nothing answers: the head listens on loopback only (it advertises 127.0.0.1): start it with "
        f"`ray start --head --node-ip-address={ip}`, or export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before launching "
        "to join it on loopback"
    ]
    assert not run_dir.exists() and _drivers(head) == drivers, "refused before any file or driver"
    assert wall < 60, f"refused after {wall:.0f} s"


def test_a_job_larger_than_the_cluster_is_refused_before_any_driver_joins(head, tmp_path):
    drivers, run_dir = _drivers(head), tmp_path / "run"
    done, wall = _launch(tmp_path, f"cluster.address=127.0.0.1:{head}", f"launcher.run_dir={run_dir}",
                         "cluster.cpu_workers_per_node=3")
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [
        f"error: cluster.address=127.0.0.1:{head}: the cluster's 1 live node(s) ({HEAD_CPUS} CPU) have room for "
        f"{HEAD_CPUS} of the job's 3 training workers (1 CPU each): set cluster.nodes=1 x "
        f"cluster.cpu_workers_per_node=3 to at most {HEAD_CPUS} workers, or lower cluster.cpus_per_worker=1, or add "
        "Ray nodes"
    ]
    assert not run_dir.exists() and _drivers(head) == drivers, "refused before any file or driver"
    assert not own_processes(TRAIN_ACTORS)
    assert wall < 60, f"refused after {wall:.0f} s"


@pytest.mark.slow
def test_a_worker_group_that_cannot_be_placed_fails_within_the_placement_timeout(head, tmp_path, workers_env):
    """The cluster is big enough, but another driver holds half of it: the worker group's placement would wait with
    no end; it fails once cluster.placement_timeout_s has passed, naming what it needs, and its actors go."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import signal, sys, ray; from ray.util.placement_group import placement_group;"
         f"ray.init(address='127.0.0.1:{head}', logging_level='ERROR');"
         "ray.get(placement_group([{'CPU': 1}]).ready(), timeout=60); print('held', flush=True); signal.pause()"],
        env=os.environ | {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"},
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        run_dir = tmp_path / "run"
        done, wall = _launch(tmp_path, f"cluster.address=127.0.0.1:{head}", f"launcher.run_dir={run_dir}",
                             "cluster.placement_timeout_s=5", "train.max_steps=2", "optim.warmup_steps=0")
    finally:
        holder.kill()
        holder.wait()
    reason = ("pool train (sft) on logical node 0 was not placed within 5 s (cluster.placement_timeout_s): it needs "
              "2 bundles of {CPU 1} on one Ray node; free: 127.0.0.1 ")
    assert done.returncode == 1, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: the run failed: {reason}"), done.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"].startswith(reason)
    assert wall < 150, f"failed after {wall:.0f} s"
    _wait_for(lambda: not own_processes(TRAIN_ACTORS), 30, "the worker actors to end")
