"""What the recipes do the same way: a stop request, the finite-loss check, what is due at a step, rank 0's outputs
and a rank's share of the pairs."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from belle import stop
from belle.config import JobConfig, job_dict
from belle.monitor.flops import model_flops_per_token
from belle.monitor.metrics import MetricsLog, StepMeter
from belle.monitor.progress import Progress
from belle.monitor.wandb_run import start_wandb


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
