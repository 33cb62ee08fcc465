"""A role's batch in micro-batches, and an update's stats as sums that the driver merges over ranks."""

from __future__ import annotations

import torch


def micro_batches(batch: dict, size: int) -> list[dict]:
    """``batch``'s rows in slices of ``size`` (the last may be shorter); scalars (``tokens``) go to each."""
    rows = len(batch["input_ids"])
    return [{k: v[i:i + size] if torch.is_tensor(v) and v.dim() else v for k, v in batch.items()}
            for i in range(0, rows, size)]


class Stats:
    """An update's stats as sums the driver merges over ranks (``merge``): losses summed as they are (each is
    already a share of its mini-batch's loss), token means weighted by the tokens, ``peak`` values as maxima."""

    LOSSES = ("policy_loss", "value_loss")

    def __init__(self) -> None:
        self.sums: dict[str, float] = {"tokens": 0.0}

    def add(self, mask: torch.Tensor, **values: torch.Tensor) -> None:
        tokens = float(mask.sum())
        self.sums["tokens"] += tokens
        for name, value in values.items():
            weight = 1.0 if name in self.LOSSES else tokens
            self.sums[name] = self.sums.get(name, 0.0) + float(value.detach()) * weight

    def peak(self, **values: torch.Tensor) -> None:
        for name, value in values.items():
            self.sums[f"max:{name}"] = max(self.sums.get(f"max:{name}", 0.0), float(value.detach()))


def merge(results: list[dict[str, float]], minibatches: int) -> dict[str, float]:
    """One rank-merged record from every rank's ``Stats.sums``: losses per mini-batch, token means, maxima."""
    tokens = sum(r["tokens"] for r in results)
    merged = {}
    for name in results[0]:
        if name.startswith("max:"):
            merged[name[4:]] = max(r[name] for r in results)
        elif name != "tokens":
            total = sum(r[name] for r in results)
            merged[name] = total / (minibatches if name in Stats.LOSSES else tokens)
    return merged
