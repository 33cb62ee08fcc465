"""DPO on preference pairs with DeepSpeed, run in every worker.

Setup (seed, tokenizer, pairs memory-mapped from the prepared data cache and sharded by rank, policy model,
DeepSpeed engine, resume, the reference) → loss (a micro-batch holds its pairs' chosen then rejected sequences: one
forward, one ZeRO-3 gather; a sequence's log-prob is the sum over its answer tokens; DPO or IPO loss against the
reference's log-probs; implicit rewards, margin and accuracy, the same on the held-out pairs) → the shared loop
(belle.recipes.common: checkpoints; a stop request saves and leaves) → save (the exported policy, as SFT exports).

The reference (method.dpo.reference): ``adapters_off`` is the policy itself with its LoRA adapters switched off;
``precomputed`` is one pass of the initial policy over every pair before step 1 (the policy starts equal to the
reference), its log-probs kept on every rank and in every checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from belle import rundir
from belle.config import JobConfig
from belle.data.cache import open_cache
from belle.data.facts import DataFacts
from belle.data.packing import collate, to_device
from belle.data.pairs import pair_rows
from belle.data.records import batched
from belle.data.template import IGNORE_INDEX, pad_id
from belle.model.attention import FLASH_PATHS
from belle.model.export import export
from belle.model.load import load_tokenizer
from belle.plan import RecipePlan
from belle.recipes import common
from belle.recipes.trainer import SUMMARY, check, data_facts, follow_up, prepare, preview  # noqa: F401 (face)
from belle.rlhf.pair_losses import dpo_loss, sequence_log_probs
from belle.strategy import grad_accumulation, optimizer_steps
from belle.strategy.engine import build_engine
from belle.train.loop import epochs
from belle.train.plan import trainer_plan
from belle.train.state import resume
from belle.train.worker import start_worker, worker_attention

KIND = "spmd"
FORMATS = ("dpo",)
METRICS = ("loss", "rewards/chosen", "rewards/rejected", "margin", "accuracy")


def plan(job: JobConfig, facts: DataFacts, warnings: list[str]) -> RecipePlan:
    """One worker group's plan; plan.json "recipe" says what it trains."""
    dpo = job.method.dpo
    return trainer_plan(job, facts, warnings, {
        "name": "dpo", "kind": KIND,
        "trains": f"the policy on (chosen, rejected) answers, {dpo.loss} loss, beta {dpo.beta:g}, reference "
                  f"{job.method.dpo_reference}",
        "rows": f"one pair per row: prompt cut to its last {dpo.max_prompt_length} tokens, answers to "
                f"data.max_length={job.data.max_length}, chosen and rejected in one micro-batch",
        "reference": job.method.dpo_reference,
    })


def train(job: JobConfig, run_dir: Path) -> dict:
    """Train ``job`` with DPO in this worker of an initialised torch.distributed world, resuming from the run's
    latest checkpoint when there is one; as belle.recipes.sft.train otherwise. Returns the final step, loss and eval
    loss (the same on every rank)."""
    import torch

    rank, world, _ = start_worker(job)
    run_dir = Path(run_dir)

    # data: held-out pairs, training pairs reshuffled every epoch, read from the cache the launcher prepared
    tokenizer = load_tokenizer(job.model)
    pad = pad_id(tokenizer)
    splits = dict(zip(("eval", "train"), open_cache(job.data, tokenizer, run_dir), strict=True))
    strategy, dpo, reference = job.strategy, job.method.dpo, job.method.dpo_reference
    accumulation = grad_accumulation(strategy, world)
    pairs_per_rank = len(splits["train"]) // world
    total_steps = optimizer_steps(len(splits["train"]), strategy, world, job.train.epochs, job.train.max_steps)

    # model and engine
    attention = worker_attention(job, torch.cuda.is_available(), rank, world)
    varlen = attention in FLASH_PATHS
    engine = build_engine(
        job.model, strategy, job.optim, job.method.lora, attention=attention, world_size=world,
        total_steps=total_steps, seed=job.train.seed,
    )
    engine.train()

    def log_probs(pairs):
        return pair_log_probs(engine, pairs, pad, job.data.max_length, dpo.max_prompt_length, varlen)

    # resume; then the reference: the adapters switched off, or the log-probs kept in the checkpoint (or, at the
    # start, computed now by the initial policy)
    state = {"step": 0, "loss": None, "eval_loss": None}
    folder = resume(engine, run_dir, state, rank)
    table = None
    if reference == "precomputed":
        table = torch.load(folder / rundir.REFERENCE_LOG_PROBS) if folder else {
            split: _precompute(log_probs, pairs, rank, world, strategy.micro_batch, engine)
            for split, pairs in splits.items()
        }

    def reference_log_probs(pairs, split: str):
        if table is not None:
            return table[split][[pair.index for pair in pairs]].to(engine.device).T.reshape(-1)
        with torch.no_grad(), engine.module.disable_adapter():
            return log_probs(pairs)

    def losses(pairs, split: str):
        """(loss, chosen reward, rejected reward) per pair."""
        reference_side = reference_log_probs(pairs, split)
        policy = log_probs(pairs).double()
        return dpo_loss(*policy.chunk(2), *reference_side.double().chunk(2), dpo.beta, dpo.loss, dpo.label_smoothing)

    start = state["step"]
    micro_batches = batched(
        epochs(splits["train"], pairs_per_rank, rank, world, job.train.seed,
               start * strategy.micro_batch * accumulation),
        strategy.micro_batch,
    )

    # loss: the mean over the global batch's pairs (equal micro-batches: DeepSpeed's mean over ranks and the window is
    # that mean)
    def micro_loss(pairs, summed: dict) -> tuple:
        loss, chosen, rejected = losses(pairs, "train")
        return loss.mean(), _totals(loss.detach(), chosen, rejected)

    def held_out() -> dict:
        return _evaluate(losses, splits["eval"], rank, world, strategy.micro_batch, engine)

    # loop, then save: the policy in Hugging Face format (LoRA: the adapter, and the base/merged model where asked)
    return common.spmd_loop(
        job, run_dir, engine, state, micro_batches, rank=rank, world=world, accumulation=accumulation,
        total_steps=total_steps, counts=common.pair_counts, micro_loss=micro_loss, metrics=_metrics,
        evaluate=held_out if splits["eval"] else None,
        export=lambda: export(engine, job.model, job.method.lora, tokenizer, run_dir / rundir.EXPORT),
        extra=_keeper(table, rank), tokenizer=tokenizer,
    )


def pair_log_probs(model, pairs, pad_token_id: int, max_length: int, max_prompt_length: int, varlen: bool = False):
    """Sequence log-probs (sums over the answer tokens) of a micro-batch of pairs by ``model`` (a DeepSpeed engine
    or a plain causal LM): its chosen sequences then its rejected ones, in one forward pass."""
    rows = pair_rows(pairs, pad_token_id, max_length, max_prompt_length)
    batch = to_device(collate(rows, varlen), next(model.parameters()).device)
    labels = batch.pop("labels")
    logits = model(**batch, attention_mask=None, use_cache=False).logits
    return sequence_log_probs(logits, labels, labels != IGNORE_INDEX)


def _keeper(table, rank: int):
    """What a checkpoint adds under a precomputed reference: rank 0 writes the table into the folder."""
    import torch

    if table is None:
        return None
    return lambda folder: rank == 0 and torch.save(table, folder / rundir.REFERENCE_LOG_PROBS)


def _precompute(log_probs, pairs, rank: int, world: int, micro_batch: int, engine):
    """[pairs, 2] float64 (chosen, rejected) log-probs of every pair by the current model, on every rank: each rank
    scores its shard, then all gather."""
    import torch
    import torch.distributed as dist

    if not len(pairs):
        return torch.zeros(0, 2, dtype=torch.float64)
    mine = common.shard(pairs, rank, world)
    values = []
    with torch.no_grad():
        for chunk in batched(mine, micro_batch):
            values.append(log_probs([pair for pair, _ in chunk]).double().reshape(2, -1).T)
    gathered = [torch.zeros(len(mine), 2, dtype=torch.float64, device=engine.device) for _ in range(world)]
    dist.all_gather(gathered, torch.cat(values))
    table = torch.zeros(len(pairs), 2, dtype=torch.float64)
    for owner, part in enumerate(gathered):
        count = len(range(owner, len(pairs), world))
        table[owner::world] = part[:count].cpu()
    return table


def _totals(loss, chosen, rejected, real=None):
    """Sums over the pairs (those where ``real``) of METRICS, and the pair count."""
    import torch

    weight = torch.ones_like(loss) if real is None else real.to(loss.dtype)
    return torch.stack([
        (loss * weight).sum(), (chosen * weight).sum(), (rejected * weight).sum(),
        ((chosen - rejected) * weight).sum(), ((chosen > rejected) * weight).sum(), weight.sum(),
    ]).double()


def _metrics(totals) -> dict:
    """METRICS from all ranks' summed _totals: means per pair."""
    *sums, pairs = totals.tolist()
    return {name: value / pairs for name, value in zip(METRICS, sums, strict=True)}


def _evaluate(losses, pairs, rank: int, world: int, micro_batch: int, engine) -> dict:
    """_metrics over ``pairs`` on all ranks (shards padded to equal forwards; the padding not counted)."""
    import torch
    import torch.distributed as dist

    totals = torch.zeros(len(METRICS) + 1, dtype=torch.float64, device=engine.device)
    engine.eval()
    with torch.no_grad():
        for chunk in batched(common.shard(pairs, rank, world), micro_batch):
            real = torch.tensor([real for _, real in chunk], device=engine.device)
            totals += _totals(*losses([pair for pair, _ in chunk], "eval"), real)
    engine.train()
    dist.all_reduce(totals)
    return _metrics(totals)
