"""How the PPO controller reaches its roles: the ``RoleCalls`` protocol (RoleGroups over Ray in
launcher/backends/pool_calls.py; belle.rlhf.local.LocalRoles, every role in this very process)."""

from typing import Protocol


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
