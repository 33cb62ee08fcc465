"""One worker's part of a generation job: the units not yet answered dealt out by length, answered in batches, each
batch's rows appended to the worker's shard before the next starts.

Dealing: every rank sorts the same open units longest prompt first and takes every world-th one from its rank, so
each rank's share and each batch have similar lengths (little padding). Every rank runs as many iterations as the
busiest one, with one all-reduce per iteration for a stop request, so all stop at the same batch; under ZeRO-3 with
partitioned weights a rank with nothing left answers a stand-in batch whose rows are dropped, because every rank
must take part in every forward pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from belle import stop
from belle.data.prompts import Prompt
from belle.generation.shards import ShardWriter, Unit
from belle.model.generate import Sampler, finished, step_seed


@dataclass
class Answered:
    """What this rank did in this attempt."""

    rows: int = 0
    tokens: int = 0
    batches: int = 0
    stopped: bool = False


def deal(prompts: dict[str, Prompt], units: list[Unit], rank: int, world: int) -> list[Unit]:
    """This rank's share of ``units``: longest prompt first (ties by id and sample), every world-th from ``rank``."""
    ordered = sorted(units, key=lambda unit: (-len(prompts[unit[0]].ids), unit))
    return ordered[rank::world]


def answer(
    run_dir: Path, module, sampler: Sampler, prompts: dict[str, Prompt], units: list[Unit], *, rank: int, world: int,
    batch: int, device, synced_gpus: bool, describe: Callable[[Prompt, int, str, int, str, int], dict],
    after_batch: Callable[[int, int, int, float], None],
) -> Answered:
    """Answer this rank's share of the open ``units`` with ``module``; each row is ``describe(prompt, sample,
    response text, its token count, finish reason, seed)``, appended to this rank's shard per batch.
    ``after_batch(index, rows, tokens, seconds)`` runs after each of this rank's batches (logging, heartbeat). Call
    it on every rank."""
    import math

    import torch
    import torch.distributed as dist

    mine = deal(prompts, units, rank, world)
    iterations = math.ceil(math.ceil(len(units) / world) / batch)
    writer, done = ShardWriter(run_dir, rank), Answered()
    try:
        for index in range(iterations):
            flag = torch.tensor([float(stop.requested(run_dir))], device=device)
            dist.all_reduce(flag)  # one rank seeing the request is enough: all stop at this same batch
            if flag.item():
                done.stopped = True
                break
            chunk = mine[index * batch:(index + 1) * batch]
            if not chunk and not synced_gpus:
                continue
            started = time.time()
            stand_in = not chunk  # ZeRO-3: take part in the forward passes, keep nothing
            batch_units = chunk or [next(iter(sorted(units)))]
            seed = step_seed(sampler.seed, index, rank)
            responses = sampler.sample(module, [prompts[i].ids for i, _ in batch_units], index, device,
                                       synced_gpus=synced_gpus)
            if stand_in:
                continue
            rows, generated = [], 0
            for (prompt_id, sample), response in zip(batch_units, responses, strict=True):
                tokens, reason = finished(response, sampler.eos)
                rows.append(describe(prompts[prompt_id], sample, sampler.tokenizer.decode(tokens), len(tokens),
                                     reason, seed))
                generated += len(tokens)
            writer.write(rows)
            done.rows, done.tokens, done.batches = done.rows + len(rows), done.tokens + generated, done.batches + 1
            after_batch(index + 1, len(rows), generated, time.time() - started)
    finally:
        writer.close()
    return done
