"""Run a function on N CPU worker processes of one torch.distributed world (gloo) they have joined, as a launcher's
workers are.

Workers are forked from one forkserver per test session that imported torch, DeepSpeed, transformers and PEFT once,
so each world starts fresh (no engine, ZeRO context, default dtype or communication state of an earlier test) without
paying those imports again; each worker takes the calling test's environment and working directory."""

import multiprocessing
import os
import socket
import tempfile

PRELOAD = ["torch", "deepspeed", "transformers", "peft", "distributed"]
"""What the forkserver imports before it forks the first worker."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, env: dict, cwd: str, fn, args: tuple, results) -> None:
    import torch
    import torch.distributed as dist

    from belle.train.worker import export_world, join_world

    os.environ.clear()
    os.environ.update(env)
    export_world("127.0.0.1", port, rank, world)
    tempfile.tempdir = None  # TMPDIR is the test's, not the forkserver's
    os.chdir(cwd)
    torch.set_num_threads(1)
    try:
        join_world(timeout_s=600)  # as a launcher's worker starts: in its world before the function runs
        results[rank] = fn(*args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def spawn(fn, *args, world: int = 2) -> list:
    """``fn(*args)`` on ``world`` fresh processes (fn must be importable); the results by rank."""
    import torch.multiprocessing as mp

    forkserver = multiprocessing.get_context("forkserver")
    forkserver.set_forkserver_preload(PRELOAD)  # read when the forkserver starts: the session's first spawn
    with multiprocessing.get_context("fork").Manager() as manager:
        results = manager.dict()
        mp.start_processes(_worker, args=(world, free_port(), dict(os.environ), os.getcwd(), fn, args, results),
                           nprocs=world, join=True, start_method="forkserver")
        return [results[rank] for rank in range(world)]
