"""PPO with an hf rollout pool of its own, on a real embedded Ray (CPU workers, gloo, the tiny model): the LoRA actor
(ZeRO-3 over 2 workers, with the critic in pool A) sends its merged weights to the rollout (pool B, 1 worker) in
1 MB buckets before every step; after each sync the rollout's weights hash as the actor's gathered ones, and a
rollout that generates with the weights of another step is refused."""

import json
import time
import uuid

import pytest
from processes import MARK, own_processes

pytestmark = [pytest.mark.ray, pytest.mark.slow]

POOLS = ("roles.layout=custom", "roles.actor.workers=2", "roles.actor.pool=A", "roles.critic.workers=2",
         "roles.critic.pool=A", "roles.rollout.workers=1", "roles.rollout.pool=B", "cluster.cpu_workers_per_node=3")
"""3 CPU workers on this machine's 2 cores: allowed here (the CLI's cluster=local refuses more workers than
cores), each worker runs one thread."""
STALE_AT = 3


class CheckedSyncs:
    """RoleGroups whose every sync is checked: SHA-256 of the actor's gathered weights (every rank) and of every
    rollout rank's, recorded per version; the sync of step ``skip`` is left out, so the rollout keeps older weights."""

    def __init__(self, groups, skip: int):
        self.groups, self.skip, self.digests = groups, skip, {}

    def world(self, role: str) -> int:
        return self.groups.world(role)

    def call(self, *args, **kwargs) -> list:
        return self.groups.call(*args, **kwargs)

    def sync_weights(self, version: int, bucket_mb: int, **kwargs) -> bool:
        if version == self.skip:
            return True
        synced = self.groups.sync_weights(version, bucket_mb, **kwargs)
        self.digests[version] = {role: self.groups.call(role, "weights_digest", phase="digest")
                                 for role in ("actor", "rollout")}
        self.digests[version]["buckets"] = self.groups.call("actor", "weight_buckets", phase="p",
                                                            bucket_mb=bucket_mb)
        return synced


@pytest.fixture
def own_ray(workers_env, monkeypatch):
    """The embedded Ray's environment, restored afterwards; at the end no process of this test's Ray is left."""
    from launcher.backends.ray_cluster import LOCAL_RAY_ENV

    for key, value in (LOCAL_RAY_ENV | {MARK: uuid.uuid4().hex, "RAY_DEDUP_LOGS": "0"}).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    yield
    names = ("raylet", "gcs_server", "ray::")
    deadline = time.monotonic() + 60
    while own_processes(names) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not own_processes(names), "Ray processes of this test outlived it"


def test_a_rollout_pool_of_its_own_generates_with_each_steps_weights(job, own_ray, tmp_path):
    from belle.recipes import ppo
    from belle.rlhf.host import RoleHost
    from belle.rlhf.planner import placement_of
    from launcher.backends.pools import pool_layouts, run_pools
    from launcher.backends.ray_cluster import ray_for

    j = job("+exp=ppo_math_rule", "+smoke=tiny", *POOLS, "roles.rollout.sync_bucket_mb=1", "train.max_steps=4",
            "method.ppo.max_new_tokens=8", "optim.lr=1e-3", "optim.warmup_steps=0", "monitor=off",
            "monitor.log_every=1")
    checked = []

    def train(job, run_dir, groups):
        checked.append(CheckedSyncs(groups, skip=STALE_AT))
        return ppo.train(job, run_dir, checked[-1])

    with ray_for(j):
        outcome = run_pools(j, tmp_path, pool_layouts(placement_of(j)), host=RoleHost, train=train,
                            placement_timeout_s=60, phase_timeout=(120, "method.ppo.phase_timeout_s"))
    assert outcome.error == (f"role rollout rank 0 generated step {STALE_AT} with weights version {STALE_AT - 1}: "
                             "stale weights; sync them first (RoleCalls.sync_weights)")
    assert outcome.restarts == 0  # refused, not retried

    digests = checked[0].digests
    assert sorted(digests) == list(range(1, STALE_AT))
    for synced in digests.values():
        assert len(set(synced["actor"])) == 1 and synced["rollout"] == synced["actor"][:1]
        assert synced["buckets"][0] >= 3  # 1 MB buckets of the tiny model's 16-bit weights
    assert digests[1]["actor"] != digests[2]["actor"]  # step 1 trained the actor: step 2 synced new weights
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(line["step"], line["weights_version"]) for line in lines] == [(1, 1), (2, 2)]
    assert all(line["time_sync_s"] > 0 for line in lines)
    placed = json.loads((tmp_path / "placement.json").read_text())["roles"]
    assert [(r["pool"], r["rank"]) for r in placed["rollout"]] == [("B", 0)]
    assert [(r["pool"], r["rank"]) for r in placed["actor"]] == [("A", 0), ("A", 1)]
