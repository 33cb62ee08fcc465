"""The model of a job inside its DeepSpeed engine: shared by every recipe (and the tests that mimic one)."""

from belle.config import JobConfig


def build_engine(job: JobConfig, world_size: int, total_steps: int, on_gpu: bool):
    """Build the job's model (LoRA adapters and activation checkpointing as configured) and hand it to DeepSpeed
    with our LR schedule over ``total_steps``. The model is built whole and partitioned by deepspeed.initialize:
    a raw deepspeed.zero.Init around its construction fails with transformers 5."""
    import deepspeed

    from belle.model.attention import resolve_attention
    from belle.model.load import build_model
    from belle.model.lora import apply_lora
    from belle.strategy.deepspeed import deepspeed_config
    from belle.strategy.schedule import build_scheduler

    model = build_model(job.model, resolve_attention(job.model.attn_implementation, on_gpu), seed=job.train.seed)
    if job.strategy.activation_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        if job.method.lora is not None:
            model.enable_input_require_grads()
    if job.method.lora is not None:
        model = apply_lora(model, job.method.lora)
    config = deepspeed_config(job.strategy, job.optim, world_size)
    optimizer = config.get("optimizer", {})
    if not on_gpu and not job.strategy.offload_optimizer and optimizer.get("type", "").lower() in ("adam", "adamw"):
        # DeepSpeed's FusedAdam on CPU is a C++ op compiled on first use (about a minute on 2 cores); torch's AdamW
        # does the same update without it (an offloaded optimizer keeps DeepSpeedCPUAdam)
        optimizer.setdefault("params", {})["torch_adam"] = True
    engine, *_ = deepspeed.initialize(
        model=model,
        model_parameters=[p for p in model.parameters() if p.requires_grad],
        config=config,
        lr_scheduler=lambda optimizer: build_scheduler(optimizer, job.optim, total_steps),
    )
    return engine
