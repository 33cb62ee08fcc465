"""How the PPO controller reaches its roles: ``RoleCalls`` (RoleGroups over Ray in launcher/backends/ray_roles.py)
and ``LocalRoles``, every role in this very process (tests, a cluster-less smoke run)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Protocol

from belle.config import JobConfig
from belle.config._checks import require
from belle.config.ppo import present_roles
from belle.rlhf.host import RoleHost


class RoleCalls(Protocol):
    def world(self, role: str) -> int:
        """Ranks of ``role`` (its pool's world size)."""

    def call(self, role: str, method: str, shards: list | None = None, *, phase: str, **kwargs) -> list:
        """``method`` of ``role`` on every rank of its pool → one result per rank, in rank order. ``shards[i]``
        goes to rank i as the first argument; None: every rank gets only ``kwargs``. ``phase`` (generate, score,
        reference, values, critic, actor, save…) names the call for timeouts and failure messages."""

    def sync_weights(self, version: int, bucket_mb: int, *, phase: str = "sync") -> bool:
        """Give a rollout pool of its own the actor's weights as ``version`` (buckets of ``bucket_mb`` MB) → True;
        False: the rollout is the actor itself, which generates with its own weights."""


class LocalRoles:
    """RoleCalls in this process: one pool (colocate_all) of world 1, a RoleHost hosting every role the job runs.
    ``log`` records each call as (role, method, phase)."""

    def __init__(self, job: JobConfig, run_dir: Path, roles: tuple[str, ...] | None = None):
        with socket.socket() as sock:  # a free port for the world of one
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.host = RoleHost(job, str(run_dir), "A", roles or present_roles(job), 0, 1, "127.0.0.1", port)
        self.info = self.host.setup()
        self.log: list[tuple[str, str, str]] = []

    def world(self, role: str) -> int:
        return 1 if role in self.host.roles else 0

    def call(self, role: str, method: str, shards: list | None = None, *, phase: str, **kwargs) -> list:
        require(shards is None or len(shards) == 1, f"{len(shards or ())} shards for the 1 rank of {role}")
        self.log.append((role, method, phase))
        return [self.host.call(role, method, *(shards or ()), **kwargs)]

    def sync_weights(self, version: int, bucket_mb: int, *, phase: str = "sync") -> bool:
        return False  # one pool: the actor generates
