"""The plan of one SPMD worker group that trains (sft, pretrain, rm, dpo): rows and optimizer steps, the batch,
memory per GPU, the DeepSpeed config, the schedule and the time, with their console lines."""

import math

from belle.config import JobConfig
from belle.data.facts import DataFacts, token_counts
from belle.model.anatomy import anatomy, trainable_params
from belle.monitor.progress import short_count
from belle.plan import RecipePlan
from belle.strategy import deepspeed_config, grad_accumulation, optimizer_steps
from belle.strategy.estimate import gpu_memory_gib, memory_per_gpu, planned_hours
from belle.strategy.schedule import planned_warmup

BF16_ACCUMULATION_WARN = 8
"""Micro-batches per optimizer step above which bf16 gradient accumulation (ZeRO-2/3) is flagged in the plan."""
PACKING_FILL = 0.98
"""Share of real tokens in a packed row (the packer's measured padding is under 2%)."""


def trainer_plan(job: JobConfig, facts: DataFacts, warnings: list[str], recipe: dict,
                 outputs: int | None = None) -> RecipePlan:
    """The plan of a trainer whose plan.json "recipe" is ``recipe`` and whose head has ``outputs`` per token (None:
    the vocabulary). Raises ValueError for a batch that cannot work; adds warnings for one that works poorly."""
    d, s, c = job.data, job.strategy, job.cluster
    mean_tokens, tokens_per_epoch = token_counts(facts, d)
    if facts.rows is not None:
        rows_per_epoch = facts.rows
    elif tokens_per_epoch is None:
        rows_per_epoch = None
    elif d.packed:
        rows_per_epoch = math.ceil(tokens_per_epoch / (d.max_length * PACKING_FILL))
    else:
        rows_per_epoch = facts.num_samples
    if rows_per_epoch:
        steps_per_epoch = optimizer_steps(rows_per_epoch, s, c.world_size, 1)
        total_steps = optimizer_steps(rows_per_epoch, s, c.world_size, job.train.epochs, job.train.max_steps)
    else:
        steps_per_epoch, total_steps = None, job.train.max_steps
    if d.pairs and facts.dropped and facts.rows is not None:
        warnings.append(
            f"{facts.dropped} pairs have no answer token left after truncation at data.max_length={d.max_length} "
            f"and are dropped ({facts.num_samples} kept)"
        )
    sections = _worker_group(job, facts, mean_tokens, outputs, warnings)
    warmup = planned_warmup(job.optim, total_steps, job.launcher.preview)
    return RecipePlan(recipe, steps_per_epoch, total_steps, sections,
                      _lines(job, sections, steps_per_epoch, total_steps, warmup, planned_hours(job, facts)))


def _worker_group(job: JobConfig, facts: DataFacts, mean_tokens: float | None, outputs: int | None,
                  warnings: list[str]) -> dict:
    """The worker group's batch arithmetic, memory per GPU and DeepSpeed config."""
    d, s, c = job.data, job.strategy, job.cluster
    parts = anatomy(job.model)
    trainable = trainable_params(parts, job.method.lora, job.model.name)
    accumulation = grad_accumulation(s, c.world_size)
    deepspeed = deepspeed_config(s, job.optim, c.world_size)  # also checks a user's deepspeed_json against ours
    if facts.samples_per_row:
        samples_per_row, tokens_per_row = facts.samples_per_row, facts.tokens_per_row
    elif mean_tokens and d.packed and d.format == "sft":
        samples_per_row, tokens_per_row = d.max_length * PACKING_FILL / mean_tokens, d.max_length * PACKING_FILL
    else:
        samples_per_row, tokens_per_row = 1.0, (d.max_length if d.format == "pretrain" else mean_tokens)
    gib = memory_per_gpu(job, parts.total_params, trainable, parts.largest_layer_params, outputs).gib()
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


def _lines(job: JobConfig, sections: dict, steps_per_epoch: int | None, total_steps: int | None,
           warmup: int | None, hours: float | None) -> list[str]:
    """The batch, memory, schedule and time lines on the console."""
    c, b, mem, ref = job.cluster, sections["batch"], sections["memory_gib_per_gpu"], job.reference
    fits = {True: "fits", False: "DOES NOT FIT", None: "no GPU"}[mem["fits"]]
    capacity = f" of {mem['capacity']:g} GiB ({fits})" if mem["capacity"] else " (CPU workers)"
    tokens = "unknown" if b["tokens_per_step"] is None else short_count(b["tokens_per_step"], digits=2)
    time = f"{round(hours, 1)} h" if hours else "n/a"
    paper = f"   paper: {ref.hours_per_epoch:g} h on {ref.hardware}" if ref.hours_per_epoch else ""
    return [
        f"  batch      micro {b['micro']} x world {c.world_size} x accumulation {b['grad_accumulation']}"
        f" = global {b['global']} sequences of {b['max_length']} tokens ({'packed' if b['packed'] else 'padded'}): "
        f"{b['samples_per_step']:g} samples, {tokens} tokens per optimizer step",
        f"  memory/GPU {mem['total']} GiB{capacity}: weights {mem['weights']}, grads {mem['gradients']}, "
        f"optimizer {mem['optimizer']}, ZeRO-3 gather {mem['zero3_working_set']}, comm {mem['comm_buckets']}, "
        f"activations {mem['activations']}, logits {mem['logits']}, overhead {mem['overhead']}",
        f"  schedule   {job.train.epochs:g} epoch(s), {steps_per_epoch or '?'} steps/epoch, "
        f"{total_steps or '?'} steps, warmup {warmup}, lr {job.optim.lr:g} {job.optim.schedule}",
        f"  time       est. {time}/epoch at MFU {c.mfu if c.use_gpu else 'n/a'}{paper}",
    ]
