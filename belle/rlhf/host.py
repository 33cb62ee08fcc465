"""One process of a PPO pool: it joins the pool's torch.distributed world and hosts every role placed on its GPU (or
CPU worker), built one after another; the controller reaches them through ``call`` (a Ray actor method in
launcher/backends/pool_calls.py, a plain call in belle.rlhf.local.LocalRoles)."""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import TYPE_CHECKING

from belle import checkpoint
from belle.config import JobConfig
from belle.config._checks import require
from belle.config.ppo import TRAINED_ROLES, ppo_settings, roles_settings, zero_stage
from belle.rlhf.state import check_resumable, planned_steps, read_controller

if TYPE_CHECKING:
    from belle.rlhf.roles import Worker


class RoleHost:
    """Every role of one pool in one process (one GPU or CPU worker); the pool is one torch.distributed world."""

    def __init__(self, job: JobConfig, run_dir: str, pool: str, roles: tuple[str, ...], rank: int, world: int,
                 master_addr: str, master_port: int):
        self.job, self.run_dir, self.pool, self.roles = job, Path(run_dir), pool, tuple(roles)
        self.rank, self.world = rank, world
        self.master_addr, self.master_port = master_addr, master_port
        self.objects: dict[str, object] = {}

    def setup(self) -> dict:
        """Join the pool's world (gloo on CPU, nccl on GPU), build each role in turn and load the run's latest
        checkpoint into the trained ones (refused, in one line, if it was saved with another world size or ZeRO
        stage) → ``{"pid", "device", "roles"}``."""
        import torch
        import torch.distributed as dist

        from belle.rlhf.roles import Worker
        from belle.train.worker import export_world, start_worker, worker_attention

        export_world(self.master_addr, self.master_port, self.rank, self.world)
        if dist.is_initialized():  # LocalRoles again in the same process: the world of one stays
            require(dist.get_world_size() == self.world,
                    f"pool {self.pool}: this process already belongs to a world of {dist.get_world_size()}")
        for role in set(self.roles) & set(TRAINED_ROLES):
            ppo_settings(self.job).check_batches(self.world, roles_settings(self.job).block(role).micro_batch,
                                                 f"roles.{role}")
        _, _, on_gpu = start_worker(self.job)
        attention = worker_attention(self.job, on_gpu, self.rank, self.world)
        worker = Worker(self.rank, self.world, attention, planned_steps(self.job))
        for role in self.roles:  # one at a time: a whole model in host RAM while it is partitioned, then the next
            self.objects[role] = _build_role(role, self.job, worker)
            gc.collect()
        folder = checkpoint.latest(self.run_dir)
        if folder is not None:
            saved = read_controller(folder)
            for role in self.roles:
                check_resumable(saved, folder, role, self.world, zero_stage(self.job, role))
                if role in TRAINED_ROLES:
                    self.objects[role].load(str(folder / role))
        device = f"cuda:{torch.cuda.current_device()}" if on_gpu else "cpu"
        return {"pid": os.getpid(), "device": device, "roles": list(self.roles)}

    def call(self, role: str, method: str, *args, **kwargs):
        """``method`` of ``role``'s object with these arguments."""
        require(role in self.objects, f"pool {self.pool} hosts {', '.join(self.roles)}, not {role}")
        require(not method.startswith("_"), f"{method} is not a role method")
        return getattr(self.objects[role], method)(*args, **kwargs)


def _build_role(role: str, job: JobConfig, worker: Worker):
    """The object of ``role`` for this process (belle.rlhf.roles, belle.rlhf.rollout)."""
    from belle.rlhf.roles import Critic, Frozen, Policy
    from belle.rlhf.rollout import Rollout

    if role in ("reference", "reward"):
        return Frozen(job, worker, role)
    return {"actor": Policy, "critic": Critic, "rollout": Rollout}[role](job, worker)
