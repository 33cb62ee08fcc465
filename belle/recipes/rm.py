"""Reward model on preference pairs with DeepSpeed, run in every worker.

Setup (seed, tokenizer, pairs memory-mapped from the prepared data cache and sharded by rank, the job's model with a
one-output score head, DeepSpeed engine, resume) → loss (a micro-batch holds its pairs' chosen then rejected
sequences: one forward, one ZeRO-3 gather; the score is read at each answer's EOS; loss -logsigmoid(r_c - r_r -
margin) [+ center_coef (r_c + r_r)^2]; accuracy, margin, reward mean and std, the same on the held-out pairs) → the
shared loop (belle.recipes.common: checkpoints; a stop request saves and leaves) → save (a
``…ForSequenceClassification`` folder, LoRA merged, with reward_stats.json: the mean and std of the scores PPO
normalises with).
"""

from __future__ import annotations

import json
from pathlib import Path

from belle import rundir
from belle.config import JobConfig
from belle.data.cache import open_cache
from belle.data.facts import DataFacts
from belle.data.packing import collate, to_device
from belle.data.pairs import pair_rows
from belle.data.records import batched
from belle.data.template import pad_id
from belle.model.attention import FLASH_PATHS
from belle.model.export import export
from belle.model.heads import SCORE
from belle.model.load import load_tokenizer
from belle.plan import RecipePlan
from belle.recipes import common
from belle.recipes.trainer import SUMMARY, check, data_facts, follow_up, prepare, preview  # noqa: F401 (face)
from belle.rlhf.pair_losses import pairwise_loss
from belle.strategy import grad_accumulation, optimizer_steps
from belle.strategy.engine import build_engine
from belle.train.loop import epochs
from belle.train.plan import trainer_plan
from belle.train.state import resume
from belle.train.worker import start_worker, worker_attention

KIND = "spmd"
FORMATS = ("preference",)


def plan(job: JobConfig, facts: DataFacts, warnings: list[str]) -> RecipePlan:
    """One worker group's plan, its head's one output per token counted; plan.json "recipe" says what it trains."""
    return trainer_plan(job, facts, warnings, {
        "name": "rm", "kind": KIND,
        "trains": "a score head on the model: -logsigmoid(r_chosen - r_rejected - margin), read at the answer's EOS",
        "rows": "one pair per row: its chosen and rejected sequences, padded to the micro-batch's longest",
    }, outputs=1)


def train(job: JobConfig, run_dir: Path) -> dict:
    """Train the reward model of ``job`` in this worker of an initialised torch.distributed world, resuming from the
    run's latest checkpoint when there is one; as belle.recipes.sft.train otherwise. Returns the final step, loss
    and eval loss (the same on every rank)."""
    import torch

    rank, world, _ = start_worker(job)
    run_dir = Path(run_dir)

    # data: held-out pairs, training pairs reshuffled every epoch, read from the cache the launcher prepared
    tokenizer = load_tokenizer(job.model)
    pad = pad_id(tokenizer)  # never the EOS: the head scores the last token that is not padding
    eval_pairs, train_pairs = open_cache(job.data, tokenizer, run_dir)
    strategy, rm = job.strategy, job.method.rm
    accumulation = grad_accumulation(strategy, world)
    pairs_per_rank = len(train_pairs) // world
    total_steps = optimizer_steps(len(train_pairs), strategy, world, job.train.epochs, job.train.max_steps)

    # model and engine: the job's model with a fresh one-output head (or a reward model's own)
    attention = worker_attention(job, torch.cuda.is_available(), rank, world)
    varlen = attention in FLASH_PATHS
    engine = build_engine(
        job.model, strategy, job.optim, job.method.lora, attention=attention, world_size=world,
        total_steps=total_steps, seed=job.train.seed, task=SCORE,
    )
    engine.train()

    def rewards(pairs) -> tuple:
        """(chosen, rejected) scores of a micro-batch of pairs: one forward over both sides."""
        return scores(engine, pair_rows(pairs, pad, job.data.max_length), varlen).chunk(2)

    # resume: weights, optimizer, schedule and step from the checkpoint; the data position follows from the step
    state = {"step": 0, "loss": None, "eval_loss": None}
    resume(engine, run_dir, state, rank)
    start = state["step"]
    micro_batches = batched(
        epochs(train_pairs, pairs_per_rank, rank, world, job.train.seed, start * strategy.micro_batch * accumulation),
        strategy.micro_batch,
    )

    # loss: the mean over the global batch's pairs (equal micro-batches: DeepSpeed's mean over ranks and the window is
    # that mean)
    def micro_loss(pairs, summed: dict) -> tuple:
        chosen, rejected = rewards(pairs)
        losses = pairwise_loss(chosen, rejected, rm.margin, rm.center_coef)
        return losses.mean(), _totals(losses.detach(), chosen.detach(), rejected.detach())

    def held_out() -> dict:
        return _evaluate(rewards, eval_pairs, rank, world, strategy.micro_batch, engine, rm)

    def export_scorer() -> None:
        """The score model with its adapters merged, and the score statistics PPO normalises with."""
        measured = _evaluate(rewards, eval_pairs or train_pairs, rank, world, strategy.micro_batch, engine, rm)
        stats = {"mean": measured["reward_mean"], "std": measured["reward_std"],
                 "pairs": len(eval_pairs or train_pairs), "data": "eval" if eval_pairs else "train"}
        export(engine, job.model, job.method.lora, tokenizer, run_dir / rundir.EXPORT, merge=True,
               files={rundir.REWARD_STATS: json.dumps(stats, indent=2) + "\n"})

    # loop, then save
    return common.spmd_loop(
        job, run_dir, engine, state, micro_batches, rank=rank, world=world, accumulation=accumulation,
        total_steps=total_steps, counts=common.pair_counts, micro_loss=micro_loss, metrics=_metrics,
        evaluate=held_out if eval_pairs else None, export=export_scorer,
    )


def scores(model, rows, varlen: bool = False):
    """One float32 score per row of ``rows`` (belle.data.packing.PackedRow, pad tails included) from a score
    model (a DeepSpeed engine or a plain module) on its device."""
    batch = to_device(collate(rows, varlen), next(model.parameters()).device)
    batch.pop("labels")
    return model(**batch, attention_mask=None, use_cache=False).logits.squeeze(-1).float()


def _totals(losses, chosen, rejected, real=None):
    """Sums over the pairs (those where ``real``): loss, correct order, margin, score, squared score, pairs."""
    import torch

    weight = torch.ones_like(losses) if real is None else real.to(losses.dtype)
    both = torch.cat([chosen, rejected])
    return torch.stack([
        (losses * weight).sum(), ((chosen > rejected) * weight).sum(), ((chosen - rejected) * weight).sum(),
        (both * weight.repeat(2)).sum(), (both * both * weight.repeat(2)).sum(), weight.sum(),
    ]).double()


def _metrics(totals) -> dict:
    """loss, accuracy, margin, reward_mean, reward_std from all ranks' summed _totals."""
    loss, correct, margin, score, square, pairs = totals.tolist()
    mean = score / (2 * pairs)
    return {
        "loss": loss / pairs, "accuracy": correct / pairs, "margin": margin / pairs,
        "reward_mean": mean, "reward_std": max(square / (2 * pairs) - mean * mean, 0.0) ** 0.5,
    }


def _evaluate(rewards, pairs, rank: int, world: int, micro_batch: int, engine, rm) -> dict:
    """_metrics over ``pairs`` on all ranks (shards padded to equal forwards; the padding not counted)."""
    import torch
    import torch.distributed as dist

    totals = torch.zeros(6, dtype=torch.float64, device=engine.device)
    engine.eval()
    with torch.no_grad():
        for chunk in batched(common.shard(pairs, rank, world), micro_batch):
            chosen, rejected = rewards([pair for pair, _ in chunk])
            real = torch.tensor([real for _, real in chunk], device=chosen.device)
            totals += _totals(pairwise_loss(chosen, rejected, rm.margin, rm.center_coef), chosen, rejected, real)
    engine.train()
    dist.all_reduce(totals)
    return _metrics(totals)
