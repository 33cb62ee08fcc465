"""Per-item scores → BELLE's tables and headline numbers, with bootstrap intervals, and run-vs-run deltas.

A row is a mapping with "id" (str), "key" (the class key), "category" (the paper category; both as on
belle.data.eval_set.EvalItem) and "score" (a number, or None for an unscored item: no readable judge score, a
failed call); other keys are ignored, so score rows read from JSON lines can be passed as they are.

As the papers aggregate: the item mean per category, then the macro average over the categories. ``score`` averages
every category with at least one scored item — the 9 paper categories (math and code folded into others,
translation into rewrite) and any category of a user's own set as well, so on a user set it is the macro mean over
its classes; ``score_wo_others`` the same without "others". Unscored items are counted, per class too, and left out
of the means; each headline names the paper categories it lacks and carries a one-line ``note`` whenever it is not
the paper's number (categories missing or added, items unscored).

Intervals are 95% percentile bootstraps: items are drawn with replacement within each category (their counts kept),
the macro mean recomputed per draw, from a seeded numpy Generator, so a seed gives the same interval every time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from belle.data.eval_set import CATEGORIES, OTHERS

METRICS = ("score", "score_wo_others")
_CELLS = 1 << 22  # resampled values held at once (a large category is drawn in slices of the resamples)


@dataclass(frozen=True)
class _Row:
    id: str
    key: str
    category: str
    score: float | None


def _rows(rows: Iterable[Mapping]) -> list[_Row]:
    parsed, seen = [], set()
    for row in rows:
        try:
            values = [row[k] for k in ("id", "key", "category", "score")]
        except KeyError as e:
            raise ValueError(f"score row {dict(row)!r:.80} has no {e}: give each row id, key, category and score") \
                from None
        id_, key, category, score = values
        if id_ in seen:
            raise ValueError(f"id {id_!r} is scored twice: give each item one row (merge shards by id)")
        seen.add(id_)
        if score is not None:
            if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
                raise ValueError(f"id {id_!r}: score {score!r} is not a finite number: give a number or None")
            score = float(score)
        parsed.append(_Row(id_, key, category, score))
    return parsed


def _ordered(names: Iterable[str]) -> list[str]:
    """Paper categories in the paper's order, then the others as first seen."""
    names = list(dict.fromkeys(names))
    return [c for c in CATEGORIES if c in names] + [c for c in names if c not in CATEGORIES]


def _resampled_means(values: np.ndarray, boot: int, rng: np.random.Generator) -> np.ndarray:
    """``boot`` bootstrap means of ``values``."""
    n = len(values)
    step = max(1, _CELLS // n)
    return np.concatenate([values[rng.integers(0, n, size=(min(step, boot - start), n))].mean(axis=1)
                           for start in range(0, boot, step)])


def _interval(draws: np.ndarray) -> list[float]:
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return [float(lo), float(hi)]


def _check_boot(boot: int) -> None:
    if boot < 1:
        raise ValueError(f"boot={boot}: the bootstrap needs at least 1 resample (1000 is usual)")


def _by_category(rows: list[_Row]) -> dict[str, np.ndarray]:
    """Category → its scored values, categories in ``_ordered`` order (a category with none scored included)."""
    groups: dict[str, list[float]] = {c: [] for c in _ordered(r.category for r in rows)}
    for row in rows:
        if row.score is not None:
            groups[row.category].append(row.score)
    return {c: np.asarray(v, dtype=float) for c, v in groups.items()}


def _macro(means: dict[str, float], draws: dict[str, np.ndarray], metric: str) -> tuple[list[str], float | None,
                                                                                       list[float] | None]:
    """The categories ``metric`` averages, its macro mean and its interval (None, None without a scored one)."""
    used = [c for c in means if metric == "score" or c != OTHERS]
    if not used:
        return used, None, None
    mean = float(np.mean([means[c] for c in used]))
    return used, mean, _interval(np.mean([draws[c] for c in used], axis=0))


def summarize(rows: Iterable[Mapping], *, boot: int = 1000, seed: int = 0) -> dict:
    """The per-class and per-category table and both macro averages of the score rows (module docstring):

    - ``n``: rows; ``by_class``: class key → {category, n, scored, mean}; ``by_category``: category → {n, scored,
      mean, ci}; mean and ci are None where nothing is scored;
    - ``score`` and ``score_wo_others``: {mean, ci, categories (those averaged), missing (paper categories without
      a scored item), unscored (unscored items in the categories it covers), note (None for the paper's number,
      else what differs)};
    - ``unscored``: {total, by_class (class key → count, classes with any)}; ``boot``, ``seed``.
    """
    _check_boot(boot)
    rows = _rows(rows)
    rng = np.random.default_rng(seed)
    values = _by_category(rows)
    draws = {c: _resampled_means(v, boot, rng) for c, v in values.items() if len(v)}
    means = {c: float(values[c].mean()) for c in draws}
    n_of = {c: sum(r.category == c for r in rows) for c in values}

    by_class: dict[str, dict] = {}
    for key in dict.fromkeys(r.key for r in sorted(rows, key=lambda r: list(values).index(r.category))):
        members = [r for r in rows if r.key == key]
        scored = [r.score for r in members if r.score is not None]
        by_class[key] = {"category": members[0].category, "n": len(members), "scored": len(scored),
                         "mean": float(np.mean(scored)) if scored else None}
    by_category = {c: {"n": n_of[c], "scored": len(values[c]), "mean": means.get(c),
                       "ci": _interval(draws[c]) if c in draws else None} for c in values}
    unscored = {k: v["n"] - v["scored"] for k, v in by_class.items() if v["n"] > v["scored"]}

    summary = {"n": len(rows), "by_class": by_class, "by_category": by_category}
    for metric in METRICS:
        used, mean, ci = _macro(means, draws, metric)
        paper = [c for c in CATEGORIES if metric == "score" or c != OTHERS]
        missing = [c for c in paper if c not in used]
        covered = [c for c in values if metric == "score" or c != OTHERS]
        n = sum(n_of[c] for c in covered)
        lacking = sum(n_of[c] - len(values[c]) for c in covered)
        added = [c for c in used if c not in paper]
        notes = [f"over {len(paper) - len(missing)} of the paper's {len(paper)} categories (missing: "
                 f"{', '.join(missing)})" if missing else "",
                 f"with {len(added)} categor{'y' if len(added) == 1 else 'ies'} of its own ({', '.join(added)})"
                 if added else "",
                 f"{lacking} of {n} items unscored" if lacking else ""]
        summary[metric] = {"mean": mean, "ci": ci, "categories": used, "missing": missing, "unscored": lacking,
                           "note": "; ".join(n for n in notes if n) or None}
    summary["unscored"] = {"total": sum(unscored.values()), "by_class": unscored}
    summary.update(boot=boot, seed=seed)
    return summary


def paired_delta(rows_a: Iterable[Mapping], rows_b: Iterable[Mapping], *, metric: str = "score", boot: int = 1000,
                 seed: int = 0) -> dict:
    """Run a's macro ``metric`` minus run b's on the same items: {metric, delta, ci, n_common, categories}.

    Rows pair by id; both runs must hold the same ids (ValueError otherwise) with the same category. Both macro
    means are taken over the ``n_common`` items scored in both runs, so delta can differ from the difference of
    the two ``summarize`` headlines when items are unscored. The interval resamples the same items for both runs
    (the paired bootstrap of the per-item differences); delta and ci are None when no item is scored in both.
    """
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r}: choose one of {', '.join(METRICS)}")
    _check_boot(boot)
    a, b = {r.id: r for r in _rows(rows_a)}, {r.id: r for r in _rows(rows_b)}
    if a.keys() != b.keys():
        only_a, only_b = sorted(a.keys() - b.keys(), key=str), sorted(b.keys() - a.keys(), key=str)
        example = (only_a or only_b)[0]
        raise ValueError(f"the runs score different items ({len(only_a)} only in the first, {len(only_b)} only in "
                         f"the second, e.g. id {example!r}): compare runs scored on the same eval set")
    for id_, row in a.items():
        if row.category != b[id_].category:
            raise ValueError(f"id {id_!r} is {row.category!r} in the first run and {b[id_].category!r} in the "
                             "second: compare runs scored on the same eval set")
    both = [_Row(i, r.key, r.category, r.score - b[i].score) for i, r in a.items()
            if r.score is not None and b[i].score is not None]
    rng = np.random.default_rng(seed)
    differences = {c: v for c, v in _by_category(both).items() if metric == "score" or c != OTHERS}
    draws = {c: _resampled_means(v, boot, rng) for c, v in differences.items()}
    used, delta, ci = _macro({c: float(v.mean()) for c, v in differences.items()}, draws, metric)
    return {"metric": metric, "delta": delta, "ci": ci, "n_common": len(both), "categories": used}
