"""Our learning-rate schedule: linear warmup from 0, then cosine, linear or constant to min_lr_ratio × lr."""

import math
from functools import partial

from belle.config.optim import OptimConfig

_DECAY = {
    "cosine": lambda progress: 0.5 * (1.0 + math.cos(math.pi * progress)),
    "linear": lambda progress: 1.0 - progress,
    "constant": lambda progress: 1.0,
}


def lr_multiplier(step: int, total_steps: int, warmup_steps: int, schedule: str, min_lr_ratio: float) -> float:
    """Share of the peak lr at optimizer step ``step`` (0-based): peak at ``warmup_steps``, floor at the end."""
    if step < warmup_steps:
        return step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * _DECAY[schedule](progress)


def warmup_steps(optim: OptimConfig, total_steps: int) -> int:
    """Warmup length in optimizer steps: optim.warmup_steps, or ceil(optim.warmup_ratio × total_steps)."""
    if total_steps < 1:
        raise ValueError(
            f"the run has {total_steps} optimizer steps (fewer samples than one global batch): "
            "set strategy.global_batch lower or train.epochs higher"
        )
    if optim.warmup_steps > total_steps:
        raise ValueError(
            f"optim.warmup_steps={optim.warmup_steps} exceeds the run's {total_steps} optimizer steps: "
            f"set optim.warmup_steps={total_steps // 10}"
        )
    return optim.warmup_steps or math.ceil(round(optim.warmup_ratio * total_steps, 6))  # 0.07 × 100 is 7, not 8


def planned_warmup(optim: OptimConfig, total_steps: int | None, preview: bool) -> int | None:
    """The plan's warmup (warmup_steps): None while the step count is unknown, and for a preview, which trains
    nothing (its maybe tiny data needs no schedule that fits)."""
    return warmup_steps(optim, total_steps) if total_steps and not preview else None


def build_scheduler(optimizer, optim: OptimConfig, total_steps: int):
    """A ``LambdaLR`` over ``optimizer`` following ``optim``, stepped once per optimizer step."""
    from torch.optim.lr_scheduler import LambdaLR

    multiplier = partial(
        lr_multiplier,
        total_steps=total_steps,
        warmup_steps=warmup_steps(optim, total_steps),
        schedule=optim.schedule,
        min_lr_ratio=optim.min_lr_ratio,
    )
    return LambdaLR(optimizer, multiplier)
