"""Models built from the config sections they need, for training or for inference: ``build_engine``, a trained model
in its DeepSpeed engine with optimizer and LR schedule; ``build_frozen``, one that only answers forward passes or
generates (under ZeRO-3 an engine without optimizer, partitioned as it is built; else the whole model on this
process's device); ``inference_model``, the plain module without gradients or dropout."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from belle.config import LoraConfig, ModelConfig, OptimConfig, StrategyConfig

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
"""strategy.precision → the torch dtype the weights are built or loaded in."""


def build_engine(
    model: ModelConfig, strategy: StrategyConfig, optim: OptimConfig, lora: LoraConfig | None, *,
    attention: str, world_size: int, total_steps: int, seed: int, task: str = "causal_lm",
):
    """Build ``model`` for ``task`` (belle.model.heads: causal_lm, or score for a reward model; LoRA adapters and
    activation checkpointing as configured) and hand it to DeepSpeed with our LR schedule over ``total_steps``.

    Weights are built or loaded in the training precision. Under ZeRO-3 the model is built under
    ``deepspeed.zero.Init`` (transformers' own switch): every rank holds only its partition from the start, and a
    checkpoint is read on rank 0 only, never whole on every rank or every GPU.
    """
    import deepspeed
    import torch

    from belle.model.load import build_model
    from belle.model.lora import apply_lora
    from belle.strategy.deepspeed import deepspeed_config
    from belle.strategy.schedule import build_scheduler

    config = deepspeed_config(strategy, optim, world_size)
    with _partitioned_build(config) if strategy.zero_stage == 3 else nullcontext():
        net = build_model(model, attention, dtype=getattr(torch, DTYPES[strategy.precision]), seed=seed, task=task)
    if strategy.activation_checkpointing:
        net.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        if lora is not None:
            net.enable_input_require_grads()
    if lora is not None:
        net = apply_lora(net, lora, task)
    if strategy.compile:
        _compile_blocks(net)
    engine, *_ = deepspeed.initialize(
        model=net,
        model_parameters=[p for p in net.parameters() if p.requires_grad],
        config=config,
        lr_scheduler=lambda optimizer: build_scheduler(optimizer, optim, total_steps),
    )
    return engine


def build_frozen(
    model: ModelConfig, strategy: StrategyConfig, optim: OptimConfig, *, attention: str, world_size: int, seed: int,
    task: str = "causal_lm",
):
    """``model`` for ``task`` built for inference (``inference_model``): under ZeRO-3 a DeepSpeed engine without
    optimizer, partitioned as it is built; else the whole model on this process's device. ``optim`` only completes
    the DeepSpeed config (its optimizer section is dropped)."""
    import deepspeed

    from belle.strategy.deepspeed import deepspeed_config

    config = {k: v for k, v in deepspeed_config(strategy, optim, world_size).items() if k != "optimizer"}
    zero3 = strategy.zero_stage == 3
    with _partitioned_build(config) if zero3 else nullcontext():
        net = inference_model(model, strategy.precision, attention=attention, seed=seed, task=task)
    if zero3:
        return deepspeed.initialize(model=net, config=config)[0]
    return net.to(local_device())


def inference_model(model: ModelConfig, precision: str, *, attention: str, seed: int, task: str = "causal_lm"):
    """``model`` for ``task`` built in ``precision`` (strategy.precision) where it is made: no gradients, no
    dropout."""
    import torch

    from belle.model.load import build_model

    net = build_model(model, attention, dtype=getattr(torch, DTYPES[precision]), seed=seed, task=task)
    net.requires_grad_(False)
    no_dropout(net)
    return net


@contextmanager
def generating(model, gather: bool):
    """``(module, synced_gpus)`` to call ``Sampler.sample`` with, for a plain module or a DeepSpeed engine. Under
    ZeRO-3 with ``gather`` the whole weights are gathered once and DeepSpeed's per-module hooks are off while it
    generates, so no rank waits on another (they would otherwise partition the weights again after the first
    forward, and every decoding step would gather every layer); without ``gather`` the weights stay partitioned and
    every rank runs forward passes in lockstep until all have finished (``synced_gpus``): call it the same number of
    times on every rank."""
    zero3 = hasattr(model, "zero_optimization_partition_weights") and model.zero_optimization_partition_weights()
    if not zero3:
        yield getattr(model, "module", model), False
    elif gather:
        from deepspeed.runtime.zero.stage3 import unwrap_model_for_generation

        with unwrap_model_for_generation(model):
            yield model.module, False
    else:
        yield model.module, True


def no_dropout(module) -> None:
    """Dropout p=0 everywhere (layers and attention), so a forward in training mode is deterministic."""
    import torch

    for sub in module.modules():
        if isinstance(sub, torch.nn.Dropout):
            sub.p = 0.0
        if hasattr(sub, "attention_dropout"):
            sub.attention_dropout = 0.0


def local_device() -> torch.device:
    """This process's GPU, else the CPU."""
    import torch

    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def _compile_blocks(net) -> None:
    """torch.compile every transformer block in place (the first ModuleList: the decoder layers, adapters inside);
    the blocks share their code, so one compiled graph serves them all. Shapes vary with the packed rows' sequence
    boundaries: compiled dynamic from the start rather than recompiled."""
    import torch

    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    blocks = next(m for m in net.modules() if isinstance(m, torch.nn.ModuleList))
    for block in blocks:
        block.compile(dynamic=True)


@contextmanager
def _partitioned_build(config: dict):
    """Models built or loaded inside are partitioned by deepspeed.zero.Init as they are made. Only inside: a model
    loaded later by one rank alone (the export's reload checks) must not start collectives the others never join."""
    from transformers.integrations import HfDeepSpeedConfig
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    switch = HfDeepSpeedConfig(config)  # noqa: F841 (transformers holds it by a weak reference)
    try:
        yield
    finally:
        unset_hf_deepspeed_config()
