"""PPO's pools on a real two-node Ray (ray.cluster_utils, 4 fake GPUs per node): every rank lands where the placement
says (under Slurm, on the Slurm node of its logical node), an unplaceable pool fails in time naming itself, a killed,
raising or stopped worker ends its phase with a one-line failure naming role, rank and phase, a failure within
train.max_failures restarts every role, and a rollout pool gets the actor's weights in buckets. Probe hosts only: no
model, no CUDA."""

import contextlib
import hashlib
import json
import os
import re
import signal
import sys
import time
import uuid
from pathlib import Path

import pytest

from belle.config.roles import RoleConfig, RolesConfig, RolloutConfig
from belle.rlhf.placement import ModelSize
from belle.rlhf.planner import plan_placement
from launcher.backends import pools
from launcher.backends.pool_calls import RoleFailure
from launcher.backends.pools import pool_layouts, run_pools
from launcher.backends.ray_cluster import LOCAL_RAY_ENV
from launcher.backends.slurm.node import node_resource

pytestmark = [pytest.mark.ray, pytest.mark.slow]

MARK = "BELLE_TEST_MARK"
"""Set to a fresh value for this module: every process of its Ray inherits it, so the leftover checks see only
those, never another Ray beside it on the machine."""
GPUS_PER_NODE = 4
TINY = {"actor": 4_000_000, "critic": 3_500_000, "reward": 3_500_000}


class ProbeHost:
    """A RoleHost without models: it says where it runs and can die, stop itself or wait as told."""

    def __init__(self, job, run_dir, pool, roles, rank, world, master_addr, master_port):
        self.pool, self.roles, self.rank, self.world = pool, roles, rank, world
        self.master = (master_addr, master_port)

    def setup(self) -> dict:
        return {"pid": os.getpid(), "device": "cpu", "roles": list(self.roles)}

    def call(self, role: str, method: str, *args, **kwargs):
        import ray

        if kwargs.get("rank", self.rank) == self.rank:
            if method == "die":
                os.kill(os.getpid(), signal.SIGKILL)
            if method == "stop":
                os.kill(os.getpid(), signal.SIGSTOP)
            if method == "fail":
                raise ValueError(f"bad shard {args[0]}")
        elif method in ("die", "stop"):
            barrier(30)  # the other ranks: waiting in a collective for the one that is gone
        return {
            "role": role, "pool": self.pool, "rank": self.rank, "world": self.world, "args": list(args),
            "kwargs": kwargs, "pid": os.getpid(), "master": list(self.master),
            "node_id": ray.get_runtime_context().get_node_id(), "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
        }


class SyncHost(ProbeHost):
    """A ProbeHost whose actor holds WEIGHTS floats (changed by ``update``) and whose rollout receives them over a
    gloo sync group, as belle.rlhf's roles do for a rollout pool of its own; it counts the calls of each method."""

    def __init__(self, *args):
        super().__init__(*args)
        self.updates, self.group, self.received, self.held, self.version, self.calls = 0, None, [], None, None, {}
        self.frozen = False

    def call(self, role: str, method: str, *args, **kwargs):
        self.calls[f"{role}.{method}"] = self.calls.get(f"{role}.{method}", 0) + 1
        if method == "freeze" and kwargs["rank"] == self.rank:  # receive, yet keep the version held (stale weights)
            self.frozen = True
        if method in ("update", "open_sync", "weight_buckets", "send_bucket", "receive_bucket", "digest", "counts"):
            return getattr(self, method)(role, *args, **kwargs)
        return super().call(role, method, *args, **kwargs)

    def update(self, role):
        self.updates += 1

    def open_sync(self, role, master_addr, master_port, world):
        import datetime

        import torch.distributed as dist

        if role == "actor" and self.rank > 0:
            return
        rank, timeout = 0 if role == "actor" else 1 + self.rank, datetime.timedelta(seconds=60)
        store = dist.TCPStore(master_addr, master_port, world, rank == 0, timeout=timeout)
        self.group = dist.ProcessGroupGloo(dist.PrefixStore("sync", store), rank, world, timeout)

    def weight_buckets(self, role, bucket_mb):
        return -(-WEIGHTS // _per_bucket(bucket_mb))

    def send_bucket(self, role, index, bucket_mb):
        if self.rank == 0:
            per = _per_bucket(bucket_mb)
            self.group.broadcast(_weights(self.updates)[index * per:(index + 1) * per].clone(), 0).wait()

    def receive_bucket(self, role, index, bucket_mb, version, last):
        import torch

        per = _per_bucket(bucket_mb)
        self.received.append(torch.empty(min(per, WEIGHTS - index * per)))
        self.group.broadcast(self.received[-1], 0).wait()
        if last:
            self.held, self.received = torch.cat(self.received), []
            self.version = self.version if self.frozen else version
        return self.version

    def digest(self, role):
        weights = _weights(self.updates) if role == "actor" else self.held
        return hashlib.sha256(weights.numpy().tobytes()).hexdigest()

    def counts(self, role):
        return self.calls


WEIGHTS, SYNC_BUCKET_MB = 600_000, 1  # float32: 2.4 MB, 3 buckets


def _per_bucket(bucket_mb: int) -> int:
    return bucket_mb * 2**20 // 4


def _weights(updates: int):
    import torch

    return torch.arange(WEIGHTS, dtype=torch.float32) + updates


def barrier(seconds: float) -> None:
    time.sleep(seconds)


def _marked_processes(*names: str) -> list[str]:
    """"pid command line" of this module's live processes whose command line holds one of ``names``."""
    import psutil

    found = []
    for process in psutil.process_iter(["pid", "cmdline", "status"]):
        with contextlib.suppress(psutil.Error):
            line = f"{process.pid} {' '.join(process.info['cmdline'] or [])}"
            if (any(name in line for name in names) and process.info["status"] != psutil.STATUS_ZOMBIE
                    and process.environ().get(MARK) == os.environ[MARK]):
                found.append(line)
    return found


def _wait_until(check, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.2)
    return check()


@pytest.fixture(scope="module")
def ray_cluster():
    """Two Ray nodes of 4 CPUs and 4 fake GPUs; at the end no process of theirs is left."""
    saved = dict(os.environ)
    os.environ.update(LOCAL_RAY_ENV | {MARK: uuid.uuid4().hex, "RAY_DEDUP_LOGS": "0"})
    os.environ.pop("RAY_ADDRESS", None)
    import ray
    from ray import cloudpickle
    from ray.cluster_utils import Cluster

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # ProbeHost: the workers cannot import this file
    # no dashboard; its API server on any free port (8265 may be another Ray's)
    head = {"num_cpus": 4, "num_gpus": GPUS_PER_NODE, "include_dashboard": False, "dashboard_port": 0}
    cluster = Cluster(initialize_head=True, head_node_args=head | {"resources": {node_resource("n-a"): 1}})
    cluster.add_node(num_cpus=4, num_gpus=GPUS_PER_NODE, resources={node_resource("n-b"): 1})
    try:
        ray.init(address=cluster.address)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        left = not _wait_until(lambda: not _marked_processes("raylet", "gcs_server", "ray::"), 60)
        mark = os.environ[MARK]
        os.environ.clear()
        os.environ.update(saved)
        assert not left, f"Ray processes of this test outlived it (mark {mark})"


def _nothing_left() -> bool:
    """No PoolWorker process alive and every placement group removed."""
    from ray.util import placement_group_table

    return not _marked_processes("PoolWorker") and all(
        g["state"] == "REMOVED" for g in placement_group_table().values()
    )


def _job(job, cluster, nodes: int, gpus: int, max_failures: int = 0):
    return job("cluster=ray", f"cluster.address={cluster.address}", f"cluster.nodes={nodes}",
               f"cluster.gpus_per_node={gpus}", "cluster.cpus_per_worker=1", f"train.max_failures={max_failures}")


def _placement(job, **roles):
    models = {
        role: ModelSize(job.model, params, 524_288, params, score=role != "actor") for role, params in TINY.items()
    }
    return plan_placement(RolesConfig(**roles), job.cluster, job.strategy, models, prompt_tokens=64, new_tokens=64)


def _rows(run_dir: Path, role: str) -> list[dict]:
    """placement.json's rows of ``role``, in rank order."""
    return json.loads((run_dir / "placement.json").read_text())["roles"][role]


def _run(job, run_dir: Path, placement, train, placement_timeout_s: float = 60, phase_timeout_s: float = 60,
         host: type = ProbeHost):
    return run_pools(job, run_dir, pool_layouts(placement), host=host, train=train,
                     placement_timeout_s=placement_timeout_s,
                     phase_timeout=(phase_timeout_s, "method.ppo.phase_timeout_s")).error


def test_a_cluster_with_fewer_nodes_than_the_pools_use_is_refused():
    layouts = [pools.PoolLayout("A", ("actor",), ((0, 0), (1, 0))), pools.PoolLayout("B", ("critic",), ((1, 1),))]
    pools.check_nodes(layouts, 2, "the Slurm allocation")
    with pytest.raises(ValueError, match=r"^the job's ranks use 2 nodes but the Slurm allocation has 1: set "
                                         r"cluster.nodes=1, or run where 2 nodes are available$"):
        pools.check_nodes(layouts, 1, "the Slurm allocation")


def test_every_rank_lands_where_the_placement_says(ray_cluster, job, tmp_path):
    j = _job(job, ray_cluster, nodes=2, gpus=GPUS_PER_NODE)
    placement = _placement(  # pool A: actor+rollout on n0:0-3; B: critic on n1:0-1; C: reward on n1:2-3
        j, layout="custom", actor=RoleConfig(workers=4, pool="A"), rollout=RolloutConfig(workers=4, pool="A"),
        critic=RoleConfig(workers=2, pool="B"), reward=RoleConfig(workers=2, pool="C", micro_batch=8),
    )
    assert [[tuple(r) for r in p.ranks] for p in placement.pools] == [
        [(0, 0), (0, 1), (0, 2), (0, 3)], [(1, 0), (1, 1)], [(1, 2), (1, 3)]
    ]
    seen = {}

    def train(job, run_dir, groups):
        assert {role: groups.world(role) for role in TINY} == {"actor": 4, "critic": 2, "reward": 2}
        seen["calls"] = {
            role: groups.call(role, "echo", [f"{role}-{i}" for i in range(groups.world(role))], phase="p", scale=2)
            for role in ("actor", "rollout", "critic", "reward")
        }
        seen["broadcast"] = groups.call("critic", "echo", phase="p", step=3)
        with pytest.raises(RoleFailure) as failed:  # a rank's own exception, its worker alive
            groups.call("reward", "fail", ["x", "y"], phase="score", rank=1)
        seen["failed"] = str(failed.value)
        seen["placement"] = json.loads((run_dir / "placement.json").read_text())["roles"]

    assert _run(j, tmp_path, placement, train) is None
    calls, rows = seen["calls"], seen["placement"]
    for pool in placement.pools:
        for role in pool.roles:
            assert [(r["pool"], r["rank"], r["node"], r["slot"]) for r in rows[role]] == [
                (pool.name, rank, node, slot) for rank, (node, slot) in enumerate(pool.ranks)
            ]
            for rank, (row, answer) in enumerate(zip(rows[role], calls[role], strict=True)):
                assert (answer["role"], answer["rank"], answer["world"]) == (role, rank, pool.workers)
                assert answer["args"] == [f"{role}-{rank}"] and answer["kwargs"] == {"scale": 2}
                assert {k: answer[k] for k in ("pid", "node_id", "gpu_ids")} == {
                    k: row[k] for k in ("pid", "node_id", "gpu_ids")
                }
                assert answer["master"] == [rows[role][0]["ip"], calls[role][0]["master"][1]]  # rank 0's node, port
    assert [a["args"] + [a["kwargs"]] for a in seen["broadcast"]] == [[{"step": 3}]] * 2
    reward = rows["reward"][1]
    assert seen["failed"] == f"role reward rank 1 (node {reward['ip']}, pid {reward['pid']}) failed in phase score: " \
        "ValueError: bad shard y"
    everything = [row for role in rows.values() for row in role]
    answers = {answer["pid"]: answer for role in calls.values() for answer in role}
    node_of = {row["node"]: row["node_id"] for row in everything}
    assert len(set(node_of.values())) == 2  # one Ray node per logical node, each logical node on one Ray node
    assert all(row["node_id"] == node_of[row["node"]] for row in everything)
    for node in (0, 1):  # one GPU per slot of a node
        gpus = {(row["slot"], tuple(row["gpu_ids"])) for row in everything if row["node"] == node}
        assert len(gpus) == GPUS_PER_NODE and len({g for _, g in gpus}) == GPUS_PER_NODE
        assert all(len(g) == 1 for _, g in gpus)
        # each process sees its own GPU first (its cuda:0), then the node's others: NCCL's direct paths between them
        mates = sorted(g for _, ids in gpus for g in ids)
        for row in (row for row in everything if row["node"] == node):
            visible = answers[row["pid"]]["visible"].split(",")
            assert visible[:1] == row["gpu_ids"] and sorted(visible) == mates, (row, visible)
    assert rows["actor"] == rows["rollout"]  # colocated roles: the same processes on the same GPUs
    assert _wait_until(_nothing_left)


def test_under_slurm_logical_node_i_is_the_ith_slurm_node(ray_cluster, job, tmp_path, monkeypatch):
    import ray

    monkeypatch.setattr(pools, "_slurm_nodes", lambda job: ["n-b", "n-a"])  # the allocation's order
    ray_node = {name: n["NodeID"] for n in ray.nodes() for name in ("n-a", "n-b")
                if node_resource(name) in n["Resources"]}
    j = _job(job, ray_cluster, nodes=2, gpus=1)  # colocate_all: rank 0 on logical node 0, rank 1 on 1
    rows = []
    assert _run(j, tmp_path, _placement(j), lambda job, run_dir, groups: rows.extend(_rows(run_dir, "actor"))) is None
    assert [(r["node"], r["node_id"]) for r in rows] == [(0, ray_node["n-b"]), (1, ray_node["n-a"])]
    assert _wait_until(_nothing_left)


def test_an_unplaceable_pool_fails_in_time_naming_pool_and_node(ray_cluster, job, tmp_path):
    j = _job(job, ray_cluster, nodes=1, gpus=8)  # 8 GPUs on one node; each Ray node has 4
    started = time.monotonic()
    error = _run(j, tmp_path, _placement(j), lambda *_: pytest.fail("trained without placement"),
                 placement_timeout_s=3)
    assert time.monotonic() - started < 15
    assert error.startswith(
        "pool A (actor+critic+reward+rollout) on logical node 0 was not placed within 3 s "
        "(cluster.placement_timeout_s): it needs 8 bundles of {CPU 1, GPU 1} on one Ray node"
    ), error
    assert "GPU 4" in error and "\n" not in error
    assert not (tmp_path / "placement.json").exists()
    assert _wait_until(_nothing_left)


def test_a_killed_worker_fails_its_phase_naming_role_rank_and_phase(ray_cluster, job, tmp_path):
    j = _job(job, ray_cluster, nodes=2, gpus=1)  # colocate_all: pool A of 2 ranks, one per node
    placement, timing = _placement(j), {}

    def train(job, run_dir, groups):
        timing["ranks"] = [(r["ip"], r["pid"]) for r in _rows(run_dir, "critic")]
        timing["called"] = time.monotonic()
        groups.call("critic", "die", phase="values", rank=1)

    error = _run(j, tmp_path, placement, train)
    assert time.monotonic() - timing["called"] < 10  # rank 0 still waits in its barrier (30 s)
    ip, pid = timing["ranks"][1]  # the IP Ray probed: 127.0.0.1, or the host's after another test's head
    assert error.startswith(f"role critic rank 1 (node {ip}, pid {pid}) died during phase values: "), error
    assert "\n" not in error
    assert _wait_until(_nothing_left)


def test_a_failure_within_max_failures_restarts_every_role(ray_cluster, job, tmp_path):
    j = _job(job, ray_cluster, nodes=2, gpus=1, max_failures=1)
    attempts = []

    def train(job, run_dir, groups):
        attempts.append([r["pid"] for r in _rows(run_dir, "actor")])
        if len(attempts) == 1:
            groups.call("actor", "die", phase="log-probs", rank=0)
        return {"steps": 1}

    assert _run(j, tmp_path, _placement(j), train) is None
    assert len(attempts) == 2 and not set(attempts[0]) & set(attempts[1])  # fresh workers
    assert _wait_until(_nothing_left)


def test_a_stopped_worker_fails_its_phase_after_the_timeout_with_its_stack(ray_cluster, job, tmp_path):
    j = _job(job, ray_cluster, nodes=2, gpus=1)
    pids, ips = [], []

    def train(job, run_dir, groups):
        pids.extend(r["pid"] for r in _rows(run_dir, "critic"))
        ips.extend(r["ip"] for r in _rows(run_dir, "critic"))
        groups.call("critic", "stop", phase="values", rank=1)

    started = time.monotonic()
    try:
        error = _run(j, tmp_path, _placement(j), train, phase_timeout_s=3)
    finally:
        for pid in pids:  # never leave a stopped process behind, whatever happened
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
    assert time.monotonic() - started < 60
    hang = tmp_path / "hang"
    assert error == (f"role critic rank 1 (node {ips[1]}, pid {pids[1]}) stalled in phase values for 3 s "
                     f"(method.ppo.phase_timeout_s); 2 rank(s) still running, their stacks in {hang}: fix the stall, "
                     "or raise method.ppo.phase_timeout_s if the phase really takes that long")
    stacks = {p.name.split("-rank-")[1]: p.read_text() for p in hang.glob("*.txt")}
    assert set(stacks) == {"0.txt", "1.txt"}
    assert "process stopped" in stacks["1.txt"] and "barrier" in stacks["0.txt"]
    assert _wait_until(_nothing_left)


def test_a_rollout_pool_gets_the_actors_weights_in_buckets(ray_cluster, job, tmp_path):
    j = _job(job, ray_cluster, nodes=1, gpus=GPUS_PER_NODE)
    placement = _placement(  # pool A: actor+critic+reward on n0:0-1; B: the rollout on n0:2-3
        j, layout="custom", actor=RoleConfig(workers=2, pool="A"), critic=RoleConfig(workers=2, pool="A"),
        reward=RoleConfig(workers=2, pool="A", micro_batch=8), rollout=RolloutConfig(workers=2, pool="B"),
    )
    digests, counts = [], {}

    def train(job, run_dir, groups):
        for version in (1, 2):
            groups.call("actor", "update", phase="actor")
            groups.sync_weights(version, SYNC_BUCKET_MB)
            digests.append(groups.call("actor", "digest", phase="p")[:1] + groups.call("rollout", "digest", phase="p"))
        counts.update({role: groups.call(role, "counts", phase="p") for role in ("actor", "rollout")})
        groups.call("rollout", "freeze", phase="p", rank=1)
        with pytest.raises(RoleFailure) as stale:
            groups.sync_weights(3, SYNC_BUCKET_MB)
        counts["stale"] = str(stale.value)

    assert _run(j, tmp_path, placement, train, host=SyncHost) is None
    assert all(len(set(d)) == 1 for d in digests) and digests[0][0] != digests[1][0]  # each sync: the actor's weights
    buckets = 3 * 2  # one Ray call per bucket and rank, two syncs; the sync group opened once
    assert all(c["actor.send_bucket"] == buckets and c["actor.open_sync"] == 1 for c in counts["actor"])
    assert all(c["rollout.receive_bucket"] == buckets and c["rollout.open_sync"] == 1 for c in counts["rollout"])
    assert re.fullmatch(r"role rollout rank 1 \(node [\d.]+, pid \d+\) holds weights version 2 after the sync of "
                        "version 3 in phase sync: its receive_bucket must take the version at the last bucket",
                        counts["stale"]), counts["stale"]
    assert _wait_until(_nothing_left)
