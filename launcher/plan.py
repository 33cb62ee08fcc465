"""The plan of a job: sizes, batch arithmetic, memory per GPU and time, computed before anything is allocated."""

import math

from belle.config import JobConfig
from belle.config._checks import require
from belle.config.hardware import PRE_AMPERE
from belle.recipes import recipe
from launcher.estimate import flops_per_token, gpu_memory_gib, hours_per_epoch, memory_per_gpu
from launcher.inspect_data import DataFacts

BF16_ACCUMULATION_WARN = 8
"""Micro-batches per optimizer step above which bf16 gradient accumulation (ZeRO-2/3) is flagged in the plan."""
PACKING_FILL = 0.98
"""Share of real tokens in a packed row (the packer's measured padding is under 2%)."""


def make_plan(job: JobConfig, facts: DataFacts, warnings: list[str]) -> dict:
    """Everything plan.json holds. Raises ValueError for settings that cannot work (batch, LoRA targets, attention)."""
    from belle.model.anatomy import anatomy, lora_params
    from belle.model.attention import describe_attention
    from belle.strategy import optimizer_steps, warmup_steps

    m, d, s, c = job.model, job.data, job.strategy, job.cluster
    if job.method.ppo is not None:
        check_ppo_strategy(job, facts, _command_line_keys())
    attention = describe_attention(
        m.attn_implementation, m.arch, s.precision, c.use_gpu, gpu_sm80=c.gpu_type not in PRE_AMPERE
    )
    parts = anatomy(m)
    trainable = lora_params(parts, job.method.lora, m.name) if job.method.lora else parts.total_params

    sequences = 2 if d.pairs else 1  # a pair's row is its chosen and its rejected sequence
    mean_tokens = min(facts.mean_tokens, sequences * d.max_length) if facts.mean_tokens else None
    tokens_per_epoch = facts.num_samples * mean_tokens if facts.num_samples and mean_tokens else None
    packed = d.packed
    if facts.rows is not None:
        rows_per_epoch = facts.rows
    elif tokens_per_epoch is None:
        rows_per_epoch = None
    elif packed:
        rows_per_epoch = math.ceil(tokens_per_epoch / (d.max_length * PACKING_FILL))
    else:
        rows_per_epoch = facts.num_samples
    if job.method.ppo is not None:  # one step per rollout batch of prompts
        from belle.rlhf.state import ppo_steps

        steps_per_epoch = facts.num_samples and facts.num_samples // job.method.ppo.rollout_batch
        total_steps = ppo_steps(job, facts.num_samples) if facts.num_samples or job.train.max_steps else None
    elif rows_per_epoch:  # the recipe's own count
        steps_per_epoch = optimizer_steps(rows_per_epoch, s, c.world_size, 1)
        total_steps = optimizer_steps(rows_per_epoch, s, c.world_size, job.train.epochs, job.train.max_steps)
    else:
        steps_per_epoch, total_steps = None, job.train.max_steps
    if d.pairs and facts.dropped and facts.rows is not None:
        warnings.append(
            f"{facts.dropped} pairs have no answer token left after truncation at data.max_length={d.max_length} "
            f"and are dropped ({facts.num_samples} kept)"
        )
    hours = hours_per_epoch(job, parts.matmul_params, tokens_per_epoch) if tokens_per_epoch else None
    if job.method.ppo is not None:  # each role has its own batch, memory and DeepSpeed config: the placement's
        workers = {"placement": _placement(job, warnings)}
    else:
        workers = _worker_group(job, facts, mean_tokens, parts, trainable, warnings)
    return {
        "experiment": job.launcher.name,
        "method": job.method.name + ("+lora" if job.method.lora else ""),
        "recipe": recipe(job.method.name).plan(job),
        "model": {
            "name": m.name, "arch": m.arch, "path": m.path, "attn_implementation": attention,
            "params_total": parts.total_params, "params_trainable": trainable,
            "trainable_share": round(trainable / parts.total_params, 6),
        },
        "cluster": {
            "kind": c.kind, "nodes": c.nodes, "device": c.gpu_type if c.use_gpu else "cpu",
            "workers_per_node": c.gpus_per_node if c.use_gpu else c.cpu_workers_per_node,
            "world_size": c.world_size, "cpus_per_worker": c.worker_cpus,
        },
        "strategy": {
            "zero_stage": s.zero_stage, "offload_optimizer": s.offload_optimizer,
            "offload_params": s.offload_params, "precision": s.precision,
            "activation_checkpointing": s.activation_checkpointing,
        },
        "data": {
            "name": d.name, "path": d.path, "format": d.format, "num_samples": facts.num_samples,
            "mean_tokens": round(mean_tokens, 1) if mean_tokens else None, "source": facts.source,
            "tokens_per_epoch": tokens_per_epoch and round(tokens_per_epoch), "dropped": facts.dropped,
        },
        "schedule": {
            "epochs": job.train.epochs, "steps_per_epoch": steps_per_epoch, "total_steps": total_steps,
            # a preview trains nothing: its (maybe tiny) data needs no schedule that fits
            "warmup_steps": warmup_steps(job.optim, total_steps) if total_steps and not job.launcher.preview else None,
            "lr": job.optim.lr, "schedule": job.optim.schedule,
        },
        "estimate": {
            "hours_per_epoch": round(hours, 1) if hours else None, "mfu_assumed": c.mfu if c.use_gpu else None,
            "tflop_per_token": round(flops_per_token(job, parts.matmul_params) / 1e12, 4),
        },
        "reference": {
            "hours_per_epoch": job.reference.hours_per_epoch, "hardware": job.reference.hardware,
            "source": job.reference.source,
        },
        **workers,
        "warnings": warnings,
    }


def _worker_group(job: JobConfig, facts: DataFacts, mean_tokens: float | None, parts, trainable: int,
                  warnings: list[str]) -> dict:
    """One worker group's batch arithmetic, memory per GPU and DeepSpeed config (every method but PPO)."""
    from belle.strategy import deepspeed_config, grad_accumulation

    d, s, c = job.data, job.strategy, job.cluster
    accumulation = grad_accumulation(s, c.world_size)
    deepspeed = deepspeed_config(s, job.optim, c.world_size)  # also checks a user's deepspeed_json against ours
    if facts.samples_per_row:
        samples_per_row, tokens_per_row = facts.samples_per_row, facts.tokens_per_row
    elif mean_tokens and d.packed and d.format == "sft":
        samples_per_row, tokens_per_row = d.max_length * PACKING_FILL / mean_tokens, d.max_length * PACKING_FILL
    else:
        samples_per_row, tokens_per_row = 1.0, (d.max_length if d.format == "pretrain" else mean_tokens)
    gib = memory_per_gpu(job, parts.total_params, trainable, parts.largest_layer_params).gib()
    capacity = gpu_memory_gib(job) if c.use_gpu else None
    if capacity and gib["total"] > capacity:
        warnings.append(
            f"the estimate of {gib['total']} GiB per GPU exceeds the {capacity:g} GiB of a {c.gpu_type}: "
            "raise strategy.zero_stage, offload (strategy.offload_optimizer/offload_params), "
            "lower strategy.micro_batch or add GPUs"
        )
    if s.precision == "bf16" and s.zero_stage >= 2 and accumulation > BF16_ACCUMULATION_WARN:
        warnings.append(
            f"gradients accumulate in bf16 over {accumulation} micro-batches under ZeRO-{s.zero_stage} (DeepSpeed "
            "accumulates in the model dtype there), losing precision: raise strategy.micro_batch, or use "
            "strategy.zero_stage=1 with strategy.deepspeed_json holding {\"data_types\": {\"grad_accum_dtype\": "
            "\"fp32\"}}"
        )
    return {
        "batch": {
            "micro": s.micro_batch, "global": s.global_batch, "grad_accumulation": accumulation,
            "max_length": d.max_length, "packed": d.packed,
            "samples_per_step": round(s.global_batch * samples_per_row, 1),
            "tokens_per_step": round(s.global_batch * tokens_per_row) if tokens_per_row else None,
        },
        "memory_gib_per_gpu": {
            **gib, "capacity": capacity, "fits": None if capacity is None else gib["total"] <= capacity,
        },
        "deepspeed": deepspeed,
    }


def check_ppo_strategy(job: JobConfig, facts: DataFacts, command_line: set[str]) -> None:
    """Refuse what a PPO job sets but never reads: strategy offload (each role offloads by roles.<role>.offload),
    strategy.micro_batch given on the command line (each role has roles.<role>.micro_batch; the presets' value is
    left alone) and launcher.prepare (PPO reads its prompts directly: there is no cache to prepare)."""
    s, roles = job.strategy, job.roles
    for key in ("offload_optimizer", "offload_params"):
        require(not getattr(s, key),
                f"strategy.{key}=true is not read by PPO, whose roles offload one by one: set "
                f"strategy.{key}=false (or strategy=zero3) and roles.actor.offload=true roles.critic.offload=true")
    require("strategy.micro_batch" not in command_line,
            f"strategy.micro_batch={s.micro_batch} is not read by PPO, whose roles have micro-batches of their own: "
            f"remove it and set roles.actor.micro_batch={s.micro_batch} roles.critic.micro_batch={s.micro_batch} "
            f"(now {roles.actor.micro_batch} and {roles.critic.micro_batch})")
    require(not job.launcher.prepare,
            f"launcher.prepare=true builds a training data cache, but PPO reads its prompts directly and has none "
            f"(all {facts.num_samples} were read and checked just now): drop launcher.prepare; launcher.dry_run=true "
            "checks them and plans the run")


def _command_line_keys() -> set[str]:
    """The config keys set on this command line (``+``/``++``/``~`` stripped); none outside the Hydra app."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return set()
    return {override.split("=", 1)[0].lstrip("+~") for override in HydraConfig.get().overrides.task}


def _placement(job: JobConfig, warnings: list[str]) -> dict:
    """PPO's role placement (belle.rlhf.placement), with its printout; one that does not fit is refused in one line
    unless roles.check_memory=false."""
    from belle.config.ppo import missing_reward_model
    from belle.config.roles import TRAINED_ROLES
    from belle.rlhf.placement import placement_lines
    from belle.rlhf.planner import placement_of

    missing = missing_reward_model(job)
    if missing:
        warnings.append(f"a launch would be refused: {missing}")
    placement = placement_of(job)
    for role in TRAINED_ROLES:  # every rank of a trained role runs as many micro-batches per mini-batch
        workers, micro_batch = placement.pool_of(role).workers, job.roles.block(role).micro_batch
        job.method.ppo.check_batches(workers, micro_batch, f"roles.{role}")
    return placement.to_json() | {"lines": placement_lines(placement)}
