"""Run a function on N CPU worker processes of one torch.distributed world (gloo), as a launcher would."""

import os
import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, fn, args: tuple, results) -> None:
    import torch
    import torch.distributed as dist

    os.environ |= {
        "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
    }
    torch.set_num_threads(1)
    try:
        results[rank] = fn(*args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def spawn(fn, *args, world: int = 2) -> list:
    """``fn(*args)`` on ``world`` spawned processes (fn must be importable); the results by rank."""
    import torch.multiprocessing as mp

    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_worker, args=(world, free_port(), fn, args, results), nprocs=world, join=True)
        return [results[rank] for rank in range(world)]
