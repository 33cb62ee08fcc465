"""The loop pieces every recipe shares: this rank's rows epoch after epoch (resumable at any row), and the eval loss
over all ranks."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from itertools import chain, count, repeat

from belle.data.packing import PackedRow, collate, to_device
from belle.data.records import batched
from belle.data.template import IGNORE_INDEX


def epochs(rows: Sequence[PackedRow], rows_per_rank: int, rank: int, world: int, seed: int, skip: int = 0):
    """This rank's rows, endlessly, from its ``skip``-th row on: every epoch a fresh shuffle (seeded by seed and
    epoch), then the rank's equal share (the remainder that would leave ranks uneven is dropped)."""
    for epoch in count(skip // rows_per_rank):
        order = list(range(len(rows)))
        random.Random(seed + epoch).shuffle(order)
        mine = order[rank::world][:rows_per_rank]
        start = skip % rows_per_rank if epoch == skip // rows_per_rank else 0
        for index in mine[start:]:
            yield rows[index]


def evaluate(engine, rows: Sequence[PackedRow], rank: int, world: int, micro_batch: int, varlen: bool) -> float:
    """Token-weighted mean loss over ``rows`` on all ranks. Shards are padded with label-free rows so every
    rank runs the same number of forward passes (ZeRO-3 gathers parameters collectively)."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    mine = range(rank, len(rows), world)
    blank = replace(rows[0], labels=[IGNORE_INDEX] * len(rows[0].labels))
    shard = chain((rows[i] for i in mine), repeat(blank, -(-len(rows) // world) - len(mine)))
    totals = torch.zeros(2, dtype=torch.float64, device=engine.device)  # summed on the device, one sync at the end
    engine.eval()
    with torch.no_grad():
        for chunk in batched(shard, micro_batch):
            batch = to_device(collate(chunk, varlen), engine.device)
            targets = batch.pop("labels")[:, 1:]
            logits = engine(**batch, attention_mask=None, use_cache=False).logits.float()
            totals[0] += F.cross_entropy(
                logits[:, :-1].flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
            )
            totals[1] += (targets != IGNORE_INDEX).sum()
    engine.train()
    dist.all_reduce(totals)
    return (totals[0] / totals[1]).item()
