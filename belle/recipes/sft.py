"""Supervised fine-tuning (full or LoRA) and continued pretraining with DeepSpeed, run in every worker.

Setup (seed, tokenizer, packed rows sharded by rank, model, DeepSpeed engine) → loop (micro-batches, one
optimizer step per accumulation window, metrics.jsonl, eval loss) → save (summary.json).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import replace
from itertools import count
from pathlib import Path

from belle.config import JobConfig
from belle.data.dataset import build_pretrain_blocks, build_sft_samples
from belle.data.packing import PackedRow, collate, pack, pad_rows
from belle.data.records import batched
from belle.data.template import IGNORE_INDEX
from belle.model.attention import resolve_attention
from belle.model.load import build_model, load_tokenizer
from belle.model.lora import apply_lora
from belle.strategy import build_scheduler, deepspeed_config, grad_accumulation


def train(job: JobConfig, run_dir: Path) -> dict:
    """Train ``job`` in this worker of the torch.distributed world; rank 0 writes run_dir/metrics.jsonl and
    run_dir/summary.json. Returns the summary (the same on every rank)."""
    import deepspeed
    import torch
    import torch.distributed as dist

    started = time.time()
    on_gpu = torch.cuda.is_available()
    if on_gpu:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    run_dir = Path(run_dir)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
    random.seed(job.train.seed)
    torch.manual_seed(job.train.seed)

    # data: held-out eval rows, training rows reshuffled every epoch
    tokenizer = load_tokenizer(job.model)
    eval_rows, train_rows = _rows(job, tokenizer)
    strategy = job.strategy
    accumulation = grad_accumulation(strategy, world)
    rows_per_rank = len(train_rows) // world
    total_steps = int(job.train.epochs * rows_per_rank) // (strategy.micro_batch * accumulation)
    if job.train.max_steps is not None:
        total_steps = min(job.train.max_steps, total_steps)
    micro_batches = batched(_epochs(train_rows, rows_per_rank, rank, world, job.train.seed), strategy.micro_batch)

    # model and engine
    model = build_model(job.model, resolve_attention(job.model.attn_implementation, on_gpu), seed=job.train.seed)
    if strategy.activation_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        if job.method.lora is not None:
            model.enable_input_require_grads()
    if job.method.lora is not None:
        model = apply_lora(model, job.method.lora)
    engine, *_ = deepspeed.initialize(
        model=model,
        model_parameters=[p for p in model.parameters() if p.requires_grad],
        config=deepspeed_config(strategy, job.optim, world),
        lr_scheduler=lambda optimizer: build_scheduler(optimizer, job.optim, total_steps),
    )
    engine.train()

    # loop: one optimizer step per accumulation window
    eval_loss = final_loss = None
    for step in range(1, total_steps + 1):
        step_start, lr = time.time(), engine.get_lr()[0]
        loss_sum = tokens = 0.0
        for _ in range(accumulation):
            rows = next(micro_batches)
            batch = {key: value.to(engine.device) for key, value in collate(rows).items()}
            loss = engine(**batch, attention_mask=None, use_cache=False).loss
            engine.backward(loss)
            engine.step()
            loss_sum += loss.item()
            tokens += sum(len(row.input_ids) - row.n_pad for row in rows)
        totals = torch.tensor([loss_sum / accumulation, tokens], dtype=torch.float64)
        dist.all_reduce(totals)
        final_loss = totals[0].item() / world
        if not math.isfinite(final_loss):
            raise RuntimeError(
                f"the training loss is {final_loss} at optimizer step {step}: lower optim.lr, raise "
                "optim.warmup_steps, or use strategy.precision=bf16 instead of fp16"
            )
        step_time = time.time() - step_start
        record = {}
        if step % job.monitor.log_every == 0 or step == total_steps:
            grad_norm = engine.get_global_grad_norm() if hasattr(engine, "get_global_grad_norm") else None
            record = {
                "step": step,
                "loss": final_loss,
                "lr": lr,
                "grad_norm": None if grad_norm is None else float(grad_norm),
                "tokens_per_s": totals[1].item() / step_time,
                "step_time_s": step_time,
            }
        if eval_rows and (step == total_steps or (job.train.eval_every and step % job.train.eval_every == 0)):
            eval_loss = _evaluate(engine, eval_rows, rank, world, strategy.micro_batch)
            record |= {"step": step, "eval_loss": eval_loss}
        if record and rank == 0:
            with open(run_dir / "metrics.jsonl", "a") as metrics:
                metrics.write(json.dumps(record) + "\n")

    # save
    summary = {
        "status": "completed",
        "steps": total_steps,
        "final_loss": final_loss,
        "eval_loss": eval_loss,
        "wall_time_s": time.time() - started,
    }
    if rank == 0:
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _rows(job: JobConfig, tokenizer) -> tuple[list[PackedRow], list[PackedRow]]:
    """Eval rows (the first data.eval_samples samples) and training rows (the rest), packed unless data.pack=false."""
    build = build_sft_samples if job.data.format == "sft" else build_pretrain_blocks
    samples, _ = build(job.data.path, tokenizer, job.data.max_length)
    held_out, rest = samples[: job.data.eval_samples], samples[job.data.eval_samples :]
    rows = pack if job.data.pack else pad_rows
    return [list(rows(part, job.data.max_length, tokenizer.pad_token_id)) for part in (held_out, rest)]


def _epochs(rows: list[PackedRow], rows_per_rank: int, rank: int, world: int, seed: int):
    """This rank's rows, endlessly: every epoch a fresh shuffle (seeded by seed and epoch), then the rank's
    equal share (the remainder that would leave ranks uneven is dropped)."""
    for epoch in count():
        order = list(range(len(rows)))
        random.Random(seed + epoch).shuffle(order)
        for index in order[rank::world][:rows_per_rank]:
            yield rows[index]


def _evaluate(engine, rows: list[PackedRow], rank: int, world: int, micro_batch: int) -> float:
    """Token-weighted mean loss over ``rows`` on all ranks. Shards are padded with label-free rows so every
    rank runs the same number of forward passes (ZeRO-3 gathers parameters collectively)."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    shard = rows[rank::world]
    blank = replace(rows[0], labels=[IGNORE_INDEX] * len(rows[0].labels))
    shard += [blank] * (-(-len(rows) // world) - len(shard))
    totals = torch.zeros(2, dtype=torch.float64)
    engine.eval()
    with torch.no_grad():
        for chunk in batched(shard, micro_batch):
            batch = {key: value.to(engine.device) for key, value in collate(chunk).items()}
            logits = engine(
                input_ids=batch["input_ids"], position_ids=batch["position_ids"], attention_mask=None, use_cache=False
            ).logits.float()
            targets = batch["labels"][:, 1:]
            totals[0] += F.cross_entropy(
                logits[:, :-1].flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
            ).item()
            totals[1] += (targets != IGNORE_INDEX).sum().item()
    engine.train()
    dist.all_reduce(totals)
    return (totals[0] / totals[1]).item()
