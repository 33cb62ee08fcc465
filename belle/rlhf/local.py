"""RoleCalls without a cluster: every role of the job in this very process (the tests' stand-in for the role pools
of launcher/backends/pool_calls.py)."""

import socket
from pathlib import Path

from belle.config import JobConfig
from belle.config._checks import require
from belle.config.ppo import present_roles
from belle.rlhf.host import RoleHost


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
