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
from collections.abc import Callable, Iterator
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


def batches(module, sampler: Sampler, prompts: dict[str, Prompt], units: list[Unit], *, rank: int, world: int,
            batch: int, device, synced_gpus: bool, step: int = 0,
            stopping: Callable[[], bool] | None = None) -> Iterator[tuple[int, list[Unit], list[list[int]], float]]:
    """(index, this rank's units, their responses as generated, seconds) per batch of this rank's share of
    ``units``, as many iterations on every rank as the busiest needs (ZeRO-3: stand-in batches, dropped); each
    batch's RNG seeded from (seed, step + index, rank). ``stopping()``, all-reduced before each batch, ends the
    iteration on every rank at the same batch. Call it on every rank."""
    import math

    import torch
    import torch.distributed as dist

    mine = deal(prompts, units, rank, world)
    for index in range(math.ceil(math.ceil(len(units) / world) / batch)):
        if stopping is not None:
            flag = torch.tensor([float(stopping())], device=device)
            dist.all_reduce(flag)  # one rank seeing the request is enough: all stop at this same batch
            if flag.item():
                return
        chunk = mine[index * batch:(index + 1) * batch]
        if not chunk and not synced_gpus:
            continue
        started = time.time()
        stand_in = [] if chunk else [next(iter(sorted(units)))]  # ZeRO-3: take part in the forward passes
        responses = sampler.sample(module, [prompts[i].ids for i, _ in chunk or stand_in], step + index, device,
                                   synced_gpus=synced_gpus)
        if chunk:
            yield index, chunk, responses, time.time() - started


def answer(
    run_dir: Path, module, sampler: Sampler, prompts: dict[str, Prompt], units: list[Unit], *, rank: int, world: int,
    batch: int, device, synced_gpus: bool, describe: Callable[[Prompt, int, str, int, str, int], dict],
    after_batch: Callable[[int, int, int, float], None], folder: Path | None = None,
) -> Answered:
    """Answer this rank's share of the open ``units`` with ``module``; each row is ``describe(prompt, sample,
    response text, its token count, finish reason, seed)``, appended to this rank's shard (in ``folder``, else
    run_dir) per batch.
    ``after_batch(index, rows, tokens, seconds)`` runs after each of this rank's batches (logging, heartbeat). Call
    it on every rank."""
    writer, done = ShardWriter(folder or run_dir, rank), Answered()
    asked = {"stop": False}

    def stopping() -> bool:
        asked["stop"] = asked["stop"] or stop.requested(run_dir)
        return asked["stop"]

    try:
        for index, chunk, responses, seconds in batches(
                module, sampler, prompts, units, rank=rank, world=world, batch=batch, device=device,
                synced_gpus=synced_gpus, stopping=stopping):
            rows, generated = [], 0
            for (prompt_id, sample), response in zip(chunk, responses, strict=True):
                tokens, reason = finished(response, sampler.eos)
                rows.append(describe(prompts[prompt_id], sample, sampler.tokenizer.decode(tokens), len(tokens),
                                     reason, step_seed(sampler.seed, index, rank)))
                generated += len(tokens)
            writer.write(rows)
            done.rows, done.tokens, done.batches = done.rows + len(rows), done.tokens + generated, done.batches + 1
            after_batch(index + 1, len(rows), generated, seconds)
    finally:
        writer.close()
    done.stopped = asked["stop"]
    return done
