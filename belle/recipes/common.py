"""What every SPMD recipe does the same way: the worker's start (distributed world, seed, attention), the engine's
resume and checkpoints with per-rank random state, a stop request, the finite-loss check, and rank 0's outputs."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path

from belle import checkpoint, stop
from belle.config import JobConfig, job_dict
from belle.model.attention import resolve_attention
from belle.monitor.flops import model_flops_per_token
from belle.monitor.metrics import MetricsLog, StepMeter
from belle.monitor.progress import Progress
from belle.monitor.wandb_run import start_wandb

CHECKPOINT_TAG = "state"


def start_worker(job: JobConfig) -> tuple[int, int, bool]:
    """Join the torch.distributed world the launcher set up and seed Python and torch; (rank, world, on_gpu)."""
    import deepspeed
    import torch
    import torch.distributed as dist

    on_gpu = torch.cuda.is_available()  # the launcher has set this worker's device
    if not on_gpu:  # DeepSpeed's shared-memory all-reduce serves inference only: skip its compile on first use (~30 s)
        from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder

        deepspeed.ops.__compatible_ops__[ShareMemCommBuilder.NAME] = False
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo")
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


def resume(engine, run_dir: Path, state: dict, rank: int) -> Path | None:
    """Load the run's newest intact checkpoint into ``engine`` and ``state`` (the keys it has) and this rank's random
    state; return its folder, or None when the run starts fresh."""
    import torch

    def skipped(folder: Path, why: str) -> None:
        if rank == 0:
            print(f"warning: checkpoint {folder.name} cannot be resumed from ({why}): trying the one before",
                  flush=True)

    directory = checkpoint.latest(run_dir, on_skip=skipped)
    if directory is None:
        return None
    _, saved = engine.load_checkpoint(str(directory), tag=CHECKPOINT_TAG)
    state.update({key: saved[key] for key in state})  # DeepSpeed adds keys of its own
    random_states = directory / f"rng-rank{rank}.pt"
    if random_states.is_file():  # absent when the world size changed: dropout draws differ, nothing else
        saved = torch.load(random_states)
        torch.set_rng_state(saved["torch"])
        if torch.cuda.is_available():
            torch.cuda.set_rng_state(saved["cuda"])
    return directory


def saver(engine, run_dir: Path, state: dict, job: JobConfig, rank: int,
          extra: Callable[[Path], None] | None = None) -> Callable[[], None]:
    """``save()``: a checkpoint of ``engine`` with ``state`` and every rank's random state (and whatever ``extra``
    writes into the folder on every rank), ``latest`` moved once all are written."""
    import torch

    def write(folder: Path) -> None:
        engine.save_checkpoint(str(folder), tag=CHECKPOINT_TAG, client_state=dict(state))
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state()
        torch.save(rng, folder / f"rng-rank{rank}.pt")
        if extra:
            extra(folder)

    return lambda: checkpoint.save(run_dir, state["step"], job.train.keep_last, write)


def leave(job: JobConfig, run_dir: Path, state: dict, start: int, save: Callable[[], None], monitor) -> dict:
    """A stop request (preemption) reached every rank: keep what was trained (unless just saved), acknowledge it
    and return ``state``, without the export."""
    if state["step"] > start and state["step"] % job.train.save_every:
        save()
    if monitor:
        stop.acknowledge(run_dir, state["step"])
        monitor.finish()
    return state


def check_finite(loss: float, step: int) -> None:
    """Stop the run at a NaN or infinite loss (the last good checkpoint stays). At step 1 the loss comes from the
    starting weights, so the message points at the inputs rather than the learning rate."""
    if math.isfinite(loss):
        return
    if step == 1:
        raise RuntimeError(
            f"the training loss is {loss} at optimizer step 1, before the learning rate could move the weights far: "
            "most likely an input is not finite: check the weights at model.path, the data and the method's "
            "settings (e.g. method.rm.margin); no checkpoint was written"
        )
    raise RuntimeError(
        f"the training loss is {loss} at optimizer step {step}: lower optim.lr, raise optim.warmup_steps, or "
        "use strategy.precision=bf16 instead of fp16; the last good checkpoint is kept"
    )


def due(every: int | None, step: int, total_steps: int) -> bool:
    """Whether something done every ``every`` steps (and at the last; None or 0: only at the last) is due."""
    return step == total_steps or bool(every and step % every == 0)


class Monitor:
    """Rank 0's outputs: metrics.jsonl, W&B, the progress line."""

    def __init__(self, job: JobConfig, run_dir: Path, total_steps: int, start: int, device, world: int):
        from belle.model.anatomy import anatomy

        m = job.model
        flops = model_flops_per_token(
            anatomy(m).matmul_params, m.num_layers, m.hidden_size, job.data.max_length, job.method.lora is not None
        )
        self.meter = StepMeter.on(device, flops, world)
        resumed = start or None
        self.metrics = MetricsLog(run_dir, resume_step=resumed)
        self.wandb = start_wandb(job.monitor, run_dir, job.launcher.name, job_dict(job), resume_step=resumed)
        self.progress = Progress(total_steps, start)

    def log(self, record: dict) -> None:
        self.metrics.log(record)
        if self.wandb:
            self.wandb.log(record, step=record["step"])
        self.progress.update(record)

    def finish(self) -> None:
        if self.wandb:
            self.wandb.finish()


def shard(items, rank: int, world: int) -> list[tuple[object, bool]]:
    """This rank's share of ``items`` (every world-th from ``rank``) as (item, real), padded with (items[0], False)
    so every rank has as many: under ZeRO-3 every rank must run the same number of forward passes."""
    mine = [(items[i], True) for i in range(rank, len(items), world)]
    return mine + [(items[0], False)] * (-(-len(items) // world) - len(mine))
