"""Supervised fine-tuning (full or LoRA) and continued pretraining with DeepSpeed, run in every worker.

Setup (seed, tokenizer, packed rows memory-mapped from the prepared data cache and sharded by rank, model, DeepSpeed
engine, resume) → loop (micro-batches, one optimizer step per accumulation window, metrics, eval loss, checkpoints;
a stop request saves and leaves) → save (the exported model).
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

from belle import checkpoint, rundir, stop
from belle.config import JobConfig, job_dict
from belle.data.cache import open_cache
from belle.data.packing import collate, to_device
from belle.data.records import batched
from belle.data.template import IGNORE_INDEX
from belle.heartbeat import Heartbeat
from belle.model.attention import FLASH_PATHS, resolve_attention
from belle.model.export import export
from belle.model.load import load_tokenizer
from belle.monitor.flops import model_flops_per_token
from belle.monitor.metrics import MetricsLog, StepMeter
from belle.monitor.progress import Progress
from belle.monitor.wandb_run import start_wandb
from belle.strategy import grad_accumulation, optimizer_steps
from belle.strategy.engine import build_engine
from belle.train.loop import epochs, evaluate

KIND = "spmd"
CHECKPOINT_TAG = "state"


def plan(job: JobConfig) -> dict:
    """The recipe's lines in plan.json: what it trains on and which tokens carry the loss."""
    return {
        "name": "sft", "kind": KIND,
        "trains": "every token of raw-text blocks" if job.data.format == "pretrain" else "the answers (prompts masked)",
        "rows": "packed" if job.data.packed else "one sample per row, padded",
    }


def train(job: JobConfig, run_dir: Path) -> dict:
    """Train ``job`` in this worker of an initialised torch.distributed world (the launcher's Ray Train workers),
    resuming from the run's latest checkpoint when there is one. Rank 0 logs metrics, W&B and progress; every rank
    takes part in checkpoints and the export. A stop request (belle.stop) saves the last step and returns early.
    Returns the final step, loss and eval loss (the same on every rank)."""
    import deepspeed
    import torch
    import torch.distributed as dist

    on_gpu = torch.cuda.is_available()  # the launcher has set this worker's device
    if not on_gpu:  # DeepSpeed's shared-memory all-reduce serves inference only: skip its compile on first use (~30 s)
        from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder

        deepspeed.ops.__compatible_ops__[ShareMemCommBuilder.NAME] = False
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    run_dir = Path(run_dir)
    random.seed(job.train.seed)
    torch.manual_seed(job.train.seed)

    # data: held-out eval rows, training rows reshuffled every epoch, read from the cache the launcher prepared
    tokenizer = load_tokenizer(job.model)
    eval_rows, train_rows = open_cache(job.data, tokenizer, run_dir)
    strategy = job.strategy
    accumulation = grad_accumulation(strategy, world)
    rows_per_rank = len(train_rows) // world
    rows_per_step = strategy.micro_batch * accumulation
    total_steps = optimizer_steps(len(train_rows), strategy, world, job.train.epochs, job.train.max_steps)

    # model and engine: attention resolved here, on the worker's own GPU and packages
    capability = torch.cuda.get_device_capability() if on_gpu else None
    attention = resolve_attention(job.model.attn_implementation, job.model.arch, strategy.precision, capability)
    varlen = attention in FLASH_PATHS  # packed-row boundaries go to the kernel as per-micro-batch lengths
    engine = build_engine(
        job.model, strategy, job.optim, job.method.lora, attention=attention, world_size=world,
        total_steps=total_steps, seed=job.train.seed,
    )
    engine.train()
    if rank == 0:
        where = torch.cuda.get_device_name() if on_gpu else "CPU"
        print(f"workers: {world} x {where}, attention {attention}", flush=True)

    # resume: weights, optimizer, schedule and step from the checkpoint; the data position follows from the step
    state = {"step": 0, "loss": None, "eval_loss": None}

    def skipped(folder: Path, why: str) -> None:
        if rank == 0:
            print(f"warning: checkpoint {folder.name} cannot be resumed from ({why}): trying the one before",
                  flush=True)

    directory = checkpoint.latest(run_dir, on_skip=skipped)
    if directory is not None:
        _, saved = engine.load_checkpoint(str(directory), tag=CHECKPOINT_TAG)
        state = {key: saved[key] for key in state}  # DeepSpeed adds keys of its own
        random_states = directory / f"rng-rank{rank}.pt"
        if random_states.is_file():  # absent when the world size changed: dropout draws differ, nothing else
            saved = torch.load(random_states)
            torch.set_rng_state(saved["torch"])
            if on_gpu:
                torch.cuda.set_rng_state(saved["cuda"])
    start = state["step"]
    micro_batches = batched(
        epochs(train_rows, rows_per_rank, rank, world, job.train.seed, start * rows_per_step), strategy.micro_batch
    )
    monitor = _Monitor(job, run_dir, total_steps, start, engine.device, world) if rank == 0 else None
    heartbeat = Heartbeat(run_dir, rank, start)  # read by the launcher's hang watchdog

    # loop: one optimizer step per accumulation window; the loss is the mean over every trained token of the
    # global batch (each micro-batch's token sum over the global count), whatever their split into micro-batches
    def save() -> None:
        def write(folder: Path) -> None:
            engine.save_checkpoint(str(folder), tag=CHECKPOINT_TAG, client_state=dict(state))
            rng = {"torch": torch.get_rng_state()} | ({"cuda": torch.cuda.get_rng_state()} if on_gpu else {})
            torch.save(rng, folder / f"rng-rank{rank}.pt")

        checkpoint.save(run_dir, state["step"], job.train.keep_last, write)

    for step in range(start + 1, total_steps + 1):
        step_start, lr = time.time(), engine.get_lr()[0]
        window = [next(micro_batches) for _ in range(accumulation)]
        rows = [row for micro in window for row in micro]
        counts = torch.tensor([
            sum(len(row.labels) - 1 - row.labels[1:].count(IGNORE_INDEX) for row in rows),  # after the LM shift
            sum(len(row.input_ids) - row.n_pad for row in rows),
            sum(row.position_ids.count(0) - (row.n_pad > 0) for row in rows),
            stop.requested(run_dir),  # one rank seeing the request is enough: all stop at this same step
        ], dtype=torch.float64, device=engine.device)  # on the device: NCCL groups have no CPU backend
        dist.all_reduce(counts)
        trained, tokens, samples, stopping = counts.tolist()
        if stopping:  # preemption: keep what was trained, then leave without the export
            if state["step"] > start and state["step"] % job.train.save_every:  # else just saved
                save()
            if monitor:
                stop.acknowledge(run_dir, state["step"])
                monitor.finish()
            return state
        loss_sum = torch.zeros((), dtype=torch.float64, device=engine.device)  # one host sync per step, below
        for micro in window:
            batch = to_device(collate(micro, varlen), engine.device)
            # sum over this micro-batch's tokens / global count; DeepSpeed then averages over ranks and the window
            loss = engine(**batch, attention_mask=None, use_cache=False, num_items_in_batch=int(trained)).loss
            engine.backward(loss * world * accumulation)
            engine.step()
            loss_sum += loss.detach()
        dist.all_reduce(loss_sum)
        state["step"], state["loss"] = step, loss_sum.item()
        if not math.isfinite(state["loss"]):
            raise RuntimeError(
                f"the training loss is {state['loss']} at optimizer step {step}: lower optim.lr, raise "
                "optim.warmup_steps, or use strategy.precision=bf16 instead of fp16; the last good checkpoint "
                "is kept"
            )
        record = {}
        if step % job.monitor.log_every == 0 or step == total_steps:
            grad_norm = engine.get_global_grad_norm()
            record = {
                "step": step, "loss": state["loss"], "lr": lr,
                "grad_norm": None if grad_norm is None else float(grad_norm),
            }
            if monitor:
                record |= monitor.meter.measure(tokens, int(samples), time.time() - step_start)
        if eval_rows and (step == total_steps or (job.train.eval_every and step % job.train.eval_every == 0)):
            state["eval_loss"] = evaluate(engine, eval_rows, rank, world, strategy.micro_batch, varlen)
            record |= {"step": step, "eval_loss": state["eval_loss"]}
        if record and monitor:
            monitor.log(record)
        if step % job.train.save_every == 0 or step == total_steps:
            save()
        heartbeat(step)

    # save: the model in Hugging Face format (LoRA: the adapter, and the base/merged model where asked)
    export(engine, job.model, job.method.lora, tokenizer, run_dir / rundir.EXPORT)
    if monitor:
        monitor.finish()
    return state


class _Monitor:
    """Rank 0's outputs: metrics.jsonl, W&B, the progress line."""

    def __init__(self, job: JobConfig, run_dir: Path, total_steps: int, start: int, device, world: int):
        from belle.model.anatomy import anatomy

        m = job.model
        flops = model_flops_per_token(
            anatomy(m).matmul_params, m.num_layers, m.hidden_size, job.data.max_length, job.method.lora is not None
        )
        self.meter = StepMeter.on(device, flops, world)
        resumed = start or None
        self.metrics = MetricsLog(run_dir, resume_step=resumed)
        self.wandb = start_wandb(job.monitor, run_dir, job.launcher.name, job_dict(job), resume_step=resumed)
        self.progress = Progress(total_steps, start)

    def log(self, record: dict) -> None:
        self.metrics.log(record)
        if self.wandb:
            self.wandb.log(record, step=record["step"])
        self.progress.update(record)

    def finish(self) -> None:
        if self.wandb:
            self.wandb.finish()
