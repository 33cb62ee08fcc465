"""What runs on Ray for an SPMD recipe (KIND "spmd"): one pool of PoolWorkers, one per GPU (or CPU worker), laid out
node-major as cluster.nodes x workers per node, each running the job's recipe in one torch.distributed world.
launcher.backends.pools places, starts, bounds and restarts them as it does a driver recipe's pools; the hang
watchdog (launcher.watchdog) names a stalled step. Where Ray comes from: launcher.backends.ray_cluster."""

from __future__ import annotations

import os
from contextlib import nullcontext
from pathlib import Path

from belle.config import JobConfig
from launcher.backends import Outcome

POOL = "train"
"""The name of an SPMD job's one pool; its one role is the method (placement.json and failure lines name it)."""


class SpmdHost:
    """One rank of an SPMD job inside its PoolWorker: ``setup`` hands it the world's address, ``call(method, "train")``
    runs the recipe, which joins the world itself and knows no Ray."""

    def __init__(self, job: JobConfig, run_dir: str, pool: str, roles: tuple[str, ...], rank: int, world: int,
                 master_addr: str, master_port: int):
        self.job, self.run_dir, self.roles, self.rank, self.world = job, Path(run_dir), tuple(roles), rank, world
        self.master_addr, self.master_port = master_addr, master_port

    def setup(self) -> dict:
        """Export this rank's place in the world for torch.distributed's env:// rendezvous → ``{"pid", "roles"}``."""
        from belle.train.worker import export_world

        export_world(self.master_addr, self.master_port, self.rank, self.world)
        return {"pid": os.getpid(), "roles": list(self.roles)}

    def call(self, role: str, method: str) -> None:
        """Run the job's recipe on this rank (the only call an SPMD rank takes)."""
        from belle.recipes import recipe

        if (role, method) != (self.job.method.name, "train"):
            raise ValueError(f"an SPMD rank runs {self.job.method.name}.train, not {role}.{method}")
        recipe(self.job.method.name).train(self.job, self.run_dir)


def run(job: JobConfig, run_dir: Path) -> Outcome:
    """Train ``job`` on the connected Ray → how it ended: why it failed (one line: the first failing rank's own
    exception, the hang watchdog's finding, or the placement that did not happen in time) and the restarts."""
    from launcher.backends.pool_calls import RoleFailure
    from launcher.backends.pools import PoolLayout, run_pools
    from launcher.watchdog import HangWatchdog, on_ray_node

    c, t, name = job.cluster, job.train, job.method.name
    per_node = c.workers_per_node
    layout = PoolLayout(POOL, (name,), tuple((rank // per_node, rank % per_node) for rank in range(c.world_size)))
    watchdog = None if t.hang_timeout_s is None else HangWatchdog(run_dir, t.hang_timeout_s, t.hang_first_step_s,
                                                                   on_node=on_ray_node)

    def train(job: JobConfig, run_dir: Path, groups) -> None:
        try:
            groups.call(name, "train", phase="train")
        except RoleFailure:
            if watchdog is not None and watchdog.hang:  # the watchdog killed the ranks: its line says why
                hang, watchdog.hang = watchdog.hang, None
                raise RoleFailure(hang) from None
            raise

    with watchdog or nullcontext():
        return run_pools(job, Path(run_dir), [layout], host=SpmdHost, train=train,
                         placement_timeout_s=c.placement_timeout_s, phase_timeout=(None, "train.hang_timeout_s"))
