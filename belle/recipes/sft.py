"""Supervised fine-tuning (full or LoRA) and continued pretraining with DeepSpeed, run in every worker.

Setup (seed, tokenizer, packed rows memory-mapped from the prepared data cache and sharded by rank, model, DeepSpeed
engine, resume) → loss (the mean over the global batch's trained tokens) → the shared loop (belle.recipes.common:
accumulation windows, metrics, eval loss, checkpoints; a stop request saves and leaves) → save (the exported model).
"""

from __future__ import annotations

from pathlib import Path

from belle import rundir
from belle.config import JobConfig
from belle.data.cache import open_cache
from belle.data.facts import DataFacts
from belle.data.packing import collate, to_device
from belle.data.records import batched
from belle.data.template import IGNORE_INDEX
from belle.model.attention import FLASH_PATHS
from belle.model.export import export
from belle.model.load import load_tokenizer
from belle.plan import RecipePlan
from belle.recipes import common
from belle.recipes.trainer import SUMMARY, check, data_facts, follow_up, prepare, preview  # noqa: F401 (face)
from belle.strategy import grad_accumulation, optimizer_steps
from belle.strategy.engine import build_engine
from belle.train.loop import epochs, evaluate
from belle.train.plan import trainer_plan
from belle.train.state import resume
from belle.train.worker import start_worker, worker_attention

KIND = "spmd"
FORMATS = ("sft", "pretrain")


def plan(job: JobConfig, facts: DataFacts, warnings: list[str]) -> RecipePlan:
    """One worker group's plan; plan.json "recipe" says what it trains on and which tokens carry the loss."""
    return trainer_plan(job, facts, warnings, {
        "name": "sft", "kind": KIND,
        "trains": "every token of raw-text blocks" if job.data.format == "pretrain" else "the answers (prompts masked)",
        "rows": "packed" if job.data.packed else "one sample per row, padded",
    })


def train(job: JobConfig, run_dir: Path) -> dict:
    """Train ``job`` in this worker of an initialised torch.distributed world (the launcher's Ray workers),
    resuming from the run's latest checkpoint when there is one. Rank 0 logs metrics, W&B and progress; every rank
    takes part in checkpoints and the export. A stop request (belle.stop) saves the last step and returns early.
    Returns the final step, loss and eval loss (the same on every rank)."""
    import torch

    rank, world, _ = start_worker(job)
    run_dir = Path(run_dir)

    # data: held-out eval rows, training rows reshuffled every epoch, read from the cache the launcher prepared
    tokenizer = load_tokenizer(job.model)
    eval_rows, train_rows = open_cache(job.data, tokenizer, run_dir)
    strategy = job.strategy
    accumulation = grad_accumulation(strategy, world)
    rows_per_rank = len(train_rows) // world
    rows_per_step = strategy.micro_batch * accumulation
    total_steps = optimizer_steps(len(train_rows), strategy, world, job.train.epochs, job.train.max_steps)

    # model and engine: attention resolved here, on the worker's own GPU and packages
    attention = worker_attention(job, torch.cuda.is_available(), rank, world)
    varlen = attention in FLASH_PATHS  # packed-row boundaries go to the kernel as per-micro-batch lengths
    engine = build_engine(
        job.model, strategy, job.optim, job.method.lora, attention=attention, world_size=world,
        total_steps=total_steps, seed=job.train.seed,
    )
    engine.train()

    # resume: weights, optimizer, schedule and step from the checkpoint; the data position follows from the step
    state = {"step": 0, "loss": None, "eval_loss": None}
    resume(engine, run_dir, state, rank)
    start = state["step"]
    micro_batches = batched(
        epochs(train_rows, rows_per_rank, rank, world, job.train.seed, start * rows_per_step), strategy.micro_batch
    )

    # loss: the mean over every trained token of the global batch (each micro-batch's token sum over the global
    # count), whatever their split into micro-batches
    def counts(rows) -> dict:
        return {
            "trained": sum(len(row.labels) - 1 - row.labels[1:].count(IGNORE_INDEX) for row in rows),  # after the shift
            "tokens": sum(len(row.input_ids) - row.n_pad for row in rows),
            "samples": sum(row.position_ids.count(0) - (row.n_pad > 0) for row in rows),
        }

    def micro_loss(micro, summed: dict) -> tuple:
        batch = to_device(collate(micro, varlen), engine.device)
        # sum over this micro-batch's tokens / global count; DeepSpeed then averages over ranks and the window
        loss = engine(**batch, attention_mask=None, use_cache=False, num_items_in_batch=int(summed["trained"])).loss
        return loss * world * accumulation, loss.detach()

    def held_out() -> dict:
        return {"loss": evaluate(engine, eval_rows, rank, world, strategy.micro_batch, varlen)}

    # loop, then save: the model in Hugging Face format (LoRA: the adapter, and the base/merged model where asked)
    return common.spmd_loop(
        job, run_dir, engine, state, micro_batches, rank=rank, world=world, accumulation=accumulation,
        total_steps=total_steps, counts=counts, micro_loss=micro_loss, metrics=lambda totals: {"loss": totals.item()},
        evaluate=held_out if eval_rows else None,
        export=lambda: export(engine, job.model, job.method.lora, tokenizer, run_dir / rundir.EXPORT),
        tokenizer=tokenizer,
    )
