"""The DeepSpeed JSON: generated from the typed strategy and optim configs, then an optional raw JSON on top.

There is no "scheduler" block: the lr schedule is ours (``belle.strategy.schedule``) and is passed to
``deepspeed.initialize(lr_scheduler=...)``, so DeepSpeed never replaces the schedule the user asked for.
"""

import json
from pathlib import Path

from belle.config.optim import OptimConfig
from belle.config.strategy import StrategyConfig
from belle.strategy.batch import grad_accumulation

FP16_LOSS_SCALING = {
    "loss_scale": 0,
    "initial_scale_power": 16,
    "loss_scale_window": 1000,
    "hysteresis": 2,
    "min_loss_scale": 1,
}
"""Dynamic loss scaling: start at 2**16, halve after 2 overflows, double after 1000 clean steps."""

STAGE3 = {
    "stage3_gather_16bit_weights_on_model_save": True,
    "stage3_prefetch_bucket_size": 50_000_000,
    "stage3_param_persistence_threshold": 100_000,
    "stage3_max_live_parameters": 1_000_000_000,
    "stage3_max_reuse_distance": 1_000_000_000,
}
"""ZeRO-3 extras: full 16-bit weights on save; prefetch/persistence at DeepSpeed's defaults, written out to tune."""

COMM_BUCKET = 200_000_000
"""Elements per ZeRO reduce / all-gather bucket (DeepSpeed's default 5e8 keeps 2 x 1 GB bf16 reduce buffers alive
under ZeRO-2 with overlap_comm); ``belle.strategy.estimate`` counts them."""

STEPS_PER_PRINT = 1_000_000_000
"""DeepSpeed's own progress lines are off: belle.monitor logs metrics."""


def deepspeed_config(strategy: StrategyConfig, optim: OptimConfig, world_size: int) -> dict:
    """The DeepSpeed config dict for ``world_size`` data-parallel workers, with strategy.deepspeed_json merged in.

    The JSON's added keys are kept, its "auto" values give way to ours (or DeepSpeed's default where we set
    none), and a value contradicting the typed config, or a "scheduler" block, is a ValueError.
    """
    config = _generated(strategy, optim, world_size)
    if not strategy.deepspeed_json:
        return config
    raw = _load(strategy.deepspeed_json)
    if "scheduler" in raw:
        raise ValueError(
            f'deepspeed_json {strategy.deepspeed_json} has a "scheduler" block, which would replace ours: '
            "remove it and set optim.schedule (cosine|linear|constant), optim.warmup_steps, optim.min_lr_ratio"
        )
    return _merge(config, raw, _owned(strategy, optim, world_size), ())


def _generated(strategy: StrategyConfig, optim: OptimConfig, world_size: int) -> dict:
    """The config from the typed settings alone."""
    zero = {
        "stage": strategy.zero_stage,
        "offload_optimizer": _offload(strategy.offload_optimizer),
        "offload_param": _offload(strategy.offload_params),
    }
    if strategy.zero_stage >= 1:
        zero |= {"reduce_bucket_size": COMM_BUCKET, "allgather_bucket_size": COMM_BUCKET}
    if strategy.zero_stage >= 2:
        zero |= {"overlap_comm": True, "contiguous_gradients": True}
    if strategy.zero_stage == 3:
        zero |= STAGE3
    fp16 = strategy.precision == "fp16"
    return {
        "train_batch_size": strategy.global_batch,
        "train_micro_batch_size_per_gpu": strategy.micro_batch,
        "gradient_accumulation_steps": grad_accumulation(strategy, world_size),
        "zero_optimization": zero,
        "bf16": {"enabled": strategy.precision == "bf16"},
        "fp16": {"enabled": fp16, **(FP16_LOSS_SCALING if fp16 else {})},
        "gradient_clipping": strategy.grad_clip,
        "optimizer": {"type": "AdamW", "params": _adam_params(strategy, optim)},
        "steps_per_print": STEPS_PER_PRINT,
        "wall_clock_breakdown": False,
    }


def _adam_params(strategy: StrategyConfig, optim: OptimConfig) -> dict:
    """AdamW's settings. With the optimizer offloaded DeepSpeed builds its CPU Adam from them (a C++ op, built
    without nvcc); otherwise torch's own fused AdamW, since DeepSpeed's FusedAdam is JIT-compiled on first use on
    every node and needs an nvcc matching torch's CUDA."""
    params = {
        "lr": optim.lr, "betas": [optim.beta1, optim.beta2], "eps": optim.eps, "weight_decay": optim.weight_decay,
    }
    return params if strategy.offload_optimizer else params | {"torch_adam": True, "fused": True}


def _offload(enabled: bool) -> dict:
    """An offload block: CPU with pinned memory, or explicitly none (so a JSON enabling it is a conflict)."""
    return {"device": "cpu", "pin_memory": True} if enabled else {"device": "none"}


def _owned(strategy: StrategyConfig, optim: OptimConfig, world_size: int) -> dict:
    """Config paths the typed config decides: path -> (the current override, the override matching a JSON value)."""

    def same(key: str, value: object) -> tuple:
        return f"{key}={_fmt(value)}", lambda theirs: f"{key}={_fmt(theirs)}"

    def flag(key: str, value: bool) -> tuple:
        return f"{key}={_fmt(value)}", lambda device: f"{key}={_fmt(device != 'none')}"

    def precision(enabled_means: str) -> tuple:
        return (
            f"strategy.precision={strategy.precision}",
            lambda on: f"strategy.precision={enabled_means if on else 'fp32'}",
        )

    per_step = strategy.micro_batch * world_size
    accumulation = (
        f"strategy.global_batch={strategy.global_batch} / (strategy.micro_batch × world size {per_step}) "
        f"= {strategy.global_batch // per_step}"
    )
    betas = f"optim.beta1={optim.beta1} optim.beta2={optim.beta2}"
    return {
        ("train_batch_size",): same("strategy.global_batch", strategy.global_batch),
        ("train_micro_batch_size_per_gpu",): same("strategy.micro_batch", strategy.micro_batch),
        ("gradient_accumulation_steps",): (
            accumulation,
            lambda steps: f"strategy.global_batch={steps * per_step}",
        ),
        ("zero_optimization", "stage"): same("strategy.zero_stage", strategy.zero_stage),
        ("zero_optimization", "offload_optimizer", "device"): flag(
            "strategy.offload_optimizer", strategy.offload_optimizer
        ),
        ("zero_optimization", "offload_param", "device"): flag("strategy.offload_params", strategy.offload_params),
        ("bf16", "enabled"): precision("bf16"),
        ("fp16", "enabled"): precision("fp16"),
        ("gradient_clipping",): same("strategy.grad_clip", strategy.grad_clip),
        ("optimizer", "params", "lr"): same("optim.lr", optim.lr),
        ("optimizer", "params", "betas"): (betas, lambda b: f"optim.beta1={b[0]} optim.beta2={b[1]}"),
        ("optimizer", "params", "eps"): same("optim.eps", optim.eps),
        ("optimizer", "params", "weight_decay"): same("optim.weight_decay", optim.weight_decay),
    }


def _merge(ours: dict, theirs: dict, owned: dict, path: tuple) -> dict:
    """``theirs`` recursively on top of ``ours``; "auto" keeps ours; an owned path must agree with ours."""
    merged = dict(ours)
    for key, value in theirs.items():
        at = (*path, key)
        dotted = ".".join(map(str, at))
        if value == "auto":
            continue
        if at in owned and value != ours.get(key):
            current, fix = owned[at]
            raise ValueError(
                f"deepspeed_json sets {dotted}={json.dumps(value)} but {current}: "
                f"set {fix(value)} or remove it from the JSON"
            )
        if isinstance(value, dict) and isinstance(ours.get(key, {}), dict):
            merged[key] = _merge(ours.get(key, {}), value, owned, at)
        elif not isinstance(ours.get(key), dict):
            merged[key] = value
        else:
            raise ValueError(
                f"deepspeed_json sets {dotted}={json.dumps(value)}, but it must be an object: fix the JSON"
            )
    return merged


def _load(path: str) -> dict:
    """The raw JSON object at ``path``; any problem is a one-line ValueError naming the file."""
    try:
        raw = json.loads(Path(path).read_text())
    except OSError as error:
        raise ValueError(
            f"strategy.deepspeed_json={path} cannot be read ({error.strerror}): set it to an existing JSON file"
        ) from None
    except json.JSONDecodeError as error:
        raise ValueError(
            f"strategy.deepspeed_json={path} is not valid JSON (line {error.lineno}: {error.msg}): "
            "fix the file or set strategy.deepspeed_json=null"
        ) from None
    if isinstance(raw, dict):
        return raw
    raise ValueError(f"strategy.deepspeed_json={path} is not a JSON object: fix the file")


def _fmt(value: object) -> str:
    """A value as a Hydra override writes it (booleans lower case)."""
    return str(value).lower() if isinstance(value, bool) else str(value)
