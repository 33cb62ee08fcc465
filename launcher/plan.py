"""The plan of a job: sizes, its recipe's part (batch arithmetic and memory per GPU, or a placement), time, computed
before anything is allocated."""

from belle.config import JobConfig
from belle.config.hardware import PRE_AMPERE
from belle.data.facts import DataFacts, token_counts
from belle.recipes import recipe
from belle.strategy.estimate import flops_per_token, planned_hours


def make_plan(job: JobConfig, facts: DataFacts, warnings: list[str]) -> dict:
    """Everything plan.json holds. Raises ValueError for settings that cannot work (batch, LoRA targets, attention,
    a placement that does not fit)."""
    from belle.model.anatomy import anatomy, trainable_params
    from belle.model.attention import describe_attention
    from belle.strategy.schedule import planned_warmup

    m, d, s, c = job.model, job.data, job.strategy, job.cluster
    attention = describe_attention(
        m.attn_implementation, m.arch, s.precision, c.use_gpu, gpu_sm80=c.gpu_type not in PRE_AMPERE
    )
    parts = anatomy(m)
    own = recipe(job.method.name).plan(job, facts, warnings)
    trainable = trainable_params(parts, job.method.lora, m.name) if own.recipe["trains"] else 0
    mean_tokens, tokens_per_epoch = token_counts(facts, d)
    hours = planned_hours(job, facts)
    total_steps = own.total_steps
    return {
        "experiment": job.launcher.name,
        "method": job.method.name + ("+lora" if job.method.lora else ""),
        "recipe": own.recipe,
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
            "epochs": job.train.epochs, "steps_per_epoch": own.steps_per_epoch, "total_steps": total_steps,
            "warmup_steps": planned_warmup(job.optim, total_steps, job.launcher.preview) if own.recipe["trains"]
            else None,
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
        **own.sections,
        "lines": own.lines,
        "warnings": warnings,
    }
