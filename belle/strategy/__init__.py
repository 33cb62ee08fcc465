"""DeepSpeed config, gradient accumulation and lr schedule from the typed strategy and optim configs."""

from belle.strategy.batch import grad_accumulation, optimizer_steps
from belle.strategy.deepspeed import deepspeed_config
from belle.strategy.schedule import build_scheduler, lr_multiplier, warmup_steps

__all__ = [
    "build_scheduler", "deepspeed_config", "grad_accumulation", "lr_multiplier", "optimizer_steps", "warmup_steps",
]
