"""A training process's start: the torch.distributed world the launcher set up, the seeds, the attention for its
device (every SPMD rank and every PPO role host)."""

import os
import random
from datetime import timedelta

from belle.config import JobConfig
from belle.model.attention import resolve_attention


def export_world(master_addr: str, master_port: int, rank: int, world: int) -> None:
    """Set this process's place in a torch.distributed world for the env:// rendezvous of ``join_world``: rank 0
    listens at ``master_addr:master_port``; one GPU (or CPU worker) per process."""
    os.environ |= {"MASTER_ADDR": master_addr, "MASTER_PORT": str(master_port), "RANK": str(rank),
                   "WORLD_SIZE": str(world), "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"}


def join_world(timeout_s: float) -> bool:
    """Join the torch.distributed world the launcher set up (``export_world``; NCCL on GPU, gloo on CPU, where
    DeepSpeed's inference-only shared-memory all-reduce is not compiled on first use: ~30 s), a collective waiting
    at most ``timeout_s``; whether this worker is on a GPU."""
    import deepspeed
    import torch

    on_gpu = torch.cuda.is_available()  # the launcher has set this worker's device
    if not on_gpu:
        from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder

        deepspeed.ops.__compatible_ops__[ShareMemCommBuilder.NAME] = False
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo", timeout=timedelta(seconds=timeout_s))
    return on_gpu


def start_worker(job: JobConfig) -> tuple[int, int, bool]:
    """Join the torch.distributed world the launcher set up and seed Python and torch; (rank, world, on_gpu)."""
    import torch
    import torch.distributed as dist

    on_gpu = join_world(job.cluster.collective_timeout_s)
    random.seed(job.train.seed)
    torch.manual_seed(job.train.seed)
    return dist.get_rank(), dist.get_world_size(), on_gpu


def worker_attention(job: JobConfig, on_gpu: bool, rank: int, world: int) -> str:
    """The attention implementation for this worker's own GPU and packages; rank 0 prints it."""
    import torch

    capability = torch.cuda.get_device_capability() if on_gpu else None
    attention = resolve_attention(job.model.attn_implementation, job.model.arch, job.strategy.precision, capability)
    if rank == 0:
        where = torch.cuda.get_device_name() if on_gpu else "CPU"
        print(f"workers: {world} x {where}, attention {attention}", flush=True)
    return attention
