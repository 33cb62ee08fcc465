"""Gradient accumulation derived from the global batch, the micro batch and the world size; optimizer steps from
the rows."""

from belle.config.strategy import StrategyConfig


def grad_accumulation(strategy: StrategyConfig, world_size: int) -> int:
    """Micro-steps per optimizer step: global_batch / (micro_batch × world_size), which must divide exactly."""
    per_step = strategy.micro_batch * world_size
    if strategy.global_batch % per_step == 0:
        return strategy.global_batch // per_step
    nearest = max(1, (strategy.global_batch + per_step // 2) // per_step) * per_step  # ties round up
    fixes = [f"strategy.global_batch={nearest}"]
    if strategy.global_batch % world_size == 0:
        per_worker = strategy.global_batch // world_size
        micro = max(m for m in range(1, strategy.micro_batch) if per_worker % m == 0)
        fixes.append(f"strategy.micro_batch={micro}")
    raise ValueError(
        f"strategy.micro_batch={strategy.micro_batch} × world size {world_size} = {per_step} does not divide "
        f"strategy.global_batch={strategy.global_batch}: set {' or '.join(fixes)}"
    )


def optimizer_steps(
    rows: int, strategy: StrategyConfig, world_size: int, epochs: float, max_steps: int | None = None
) -> int:
    """Optimizer steps of ``epochs`` passes over ``rows`` training rows, as the recipe takes them: each rank's equal
    share of the rows (the remainder dropped), whole steps (rounded down), at most ``max_steps``."""
    per_step = strategy.micro_batch * grad_accumulation(strategy, world_size)
    steps = int(epochs * (rows // world_size)) // per_step
    return steps if max_steps is None else min(max_steps, steps)
