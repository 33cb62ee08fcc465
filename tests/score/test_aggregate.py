"""Aggregation as BELLE's papers do it, on a hand-checked mini set; the bootstrap intervals; paired deltas; the
scores plot."""

import time

import numpy as np
import pytest

from belle.data.eval_set import category
from belle.score.aggregate import paired_delta, summarize
from belle.score.plot import plot_scores

# (id, class key, score): None is an unscored item
MINI = [
    ("o1", "open qa", 1.0), ("o2", "open qa", 0.5), ("o3", "open qa", None),
    ("b1", "brainstorming", 0.8),
    ("c1", "classification", 0.6), ("c2", "classification", 0.4),
    ("g1", "generation", 0.9),
    ("s1", "summarization", 0.7),
    ("r1", "rewrite", 0.2), ("t1", "translation", 1.0), ("t2", "translation", 0.6),
    ("q1", "closed qa", 0.3),
    ("e1", "extract", 0.5), ("e2", "extract", 1.0),
    ("m1", "math", 0.0), ("m2", "math", 1.0), ("m3", "math", 0.5), ("k1", "code", 0.2),
]
# by hand: the category means; rewrite = (0.2 + 1.0 + 0.6) / 3, others = (0 + 1 + 0.5 + 0.2) / 4 (the item mean over
# math and code, not the mean of their class means 0.35)
CATEGORY_MEANS = {"open qa": 0.75, "brainstorming": 0.8, "classification": 0.5, "generation": 0.9,
                  "summarization": 0.7, "rewrite": 0.6, "closed qa": 0.3, "extract": 0.75, "others": 0.425}
SCORE_WO_OTHERS = 5.3 / 8  # 0.75 + 0.8 + 0.5 + 0.9 + 0.7 + 0.6 + 0.3 + 0.75 = 5.3
SCORE = 5.725 / 9


def rows(items=MINI, shift=0.0):
    return [{"id": i, "key": key, "category": category(key), "score": None if s is None else s + shift}
            for i, key, s in items]


def test_per_class_and_per_category_means_and_both_macro_averages():
    summary = summarize(rows())
    assert summary["n"] == 18
    assert {k: v["mean"] for k, v in summary["by_class"].items()} == pytest.approx(
        {"open qa": 0.75, "brainstorming": 0.8, "classification": 0.5, "generation": 0.9, "summarization": 0.7,
         "rewrite": 0.2, "translation": 0.8, "closed qa": 0.3, "extract": 0.75, "math": 0.5, "code": 0.2})
    assert summary["by_class"]["open qa"] == {"category": "open qa", "n": 3, "scored": 2, "mean": 0.75}
    assert summary["by_class"]["translation"]["category"] == "rewrite"
    assert summary["by_class"]["code"]["category"] == "others"
    by_category = summary["by_category"]
    assert list(by_category) == list(CATEGORY_MEANS)  # the paper's order
    assert {c: v["mean"] for c, v in by_category.items()} == pytest.approx(CATEGORY_MEANS)
    assert (by_category["rewrite"]["n"], by_category["others"]["n"], by_category["open qa"]["scored"]) == (3, 4, 2)
    assert summary["score"]["mean"] == pytest.approx(SCORE)  # 0.6361
    assert summary["score_wo_others"]["mean"] == pytest.approx(SCORE_WO_OTHERS)  # 0.6625
    assert summary["score"]["categories"] == list(CATEGORY_MEANS)
    assert summary["score_wo_others"]["categories"] == list(CATEGORY_MEANS)[:-1]
    assert summary["score"]["missing"] == summary["score_wo_others"]["missing"] == []
    # the unscored item is counted, shown per class and marked on both headlines
    assert summary["unscored"] == {"total": 1, "by_class": {"open qa": 1}}
    assert summary["score"]["note"] == "1 of 18 items unscored"
    assert summary["score_wo_others"]["note"] == "1 of 14 items unscored"


def test_the_paper_number_has_no_note_and_missing_categories_are_named():
    complete = [item for item in MINI if item[2] is not None]
    assert summarize(rows(complete))["score"]["note"] is None
    no_extract = [item for item in complete if item[1] != "extract"]
    summary = summarize(rows(no_extract))
    assert summary["score"]["missing"] == ["extract"]
    assert summary["score"]["note"] == "over 8 of the paper's 9 categories (missing: extract)"
    assert summary["score"]["mean"] == pytest.approx((5.725 - 0.75) / 8)
    unscored_others = [(i, k, None if k in ("math", "code") else s) for i, k, s in complete]
    summary = summarize(rows(unscored_others))
    assert summary["by_category"]["others"] == {"n": 4, "scored": 0, "mean": None, "ci": None}
    assert summary["score"]["mean"] == pytest.approx(SCORE_WO_OTHERS)
    assert summary["score"]["note"] == "over 8 of the paper's 9 categories (missing: others); 4 of 17 items unscored"
    assert summary["score_wo_others"]["note"] is None  # others is not part of it


def test_a_users_own_categories_are_averaged_too():
    own = [("a", "labels", 1.0), ("b", "labels", 0.0), ("c", "Yes/No", 1.0), ("d", "open qa", 0.5)]
    summary = summarize([{"id": i, "key": k, "category": k, "score": s} for i, k, s in own])
    assert list(summary["by_category"]) == ["open qa", "labels", "Yes/No"]  # paper categories first
    assert summary["score"]["mean"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert summary["score"]["categories"] == ["open qa", "labels", "Yes/No"]
    assert summary["score"]["note"].endswith("; with 2 categories of its own (labels, Yes/No)")


def test_bootstrap_intervals_hold_the_estimate_and_repeat_for_a_seed():
    summary = summarize(rows(), boot=2000, seed=3)
    for headline in ("score", "score_wo_others"):
        lo, hi = summary[headline]["ci"]
        assert lo < summary[headline]["mean"] < hi and hi - lo < 0.5
    for name, c in summary["by_category"].items():
        assert c["ci"][0] <= c["mean"] <= c["ci"][1], name
    assert summary["by_category"]["generation"]["ci"] == [0.9, 0.9]  # one item: nothing to resample
    assert summarize(rows(), boot=2000, seed=3) == summary
    assert summarize(rows(), boot=2000, seed=4)["score"]["ci"] != summary["score"]["ci"]


def test_the_interval_narrows_with_more_items_and_is_fast():
    rng = np.random.default_rng(0)
    keys = [k for _, k, _ in MINI]
    many = [(f"x{n}", keys[n % len(keys)], float(rng.random())) for n in range(1000)]
    start = time.perf_counter()
    summary = summarize(rows(many), boot=1000)
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"1,000 items x 1,000 resamples took {elapsed:.2f} s"
    lo, hi = summary["score"]["ci"]
    assert 0.02 < hi - lo < 0.1  # uniform scores: sd 0.29 / sqrt(1000) x 3.9 ~ 0.036 for a plain mean


def test_paired_delta_of_a_run_with_itself_is_zero():
    result = paired_delta(rows(), rows())
    assert result == {"metric": "score", "delta": 0.0, "ci": [0.0, 0.0], "n_common": 17,
                      "categories": list(CATEGORY_MEANS)}


def test_paired_delta_pairs_items_and_resamples_them_together():
    shifted = rows(shift=-0.1)  # every score 0.1 lower (m1 goes to -0.1; aggregation does not clip)
    result = paired_delta(rows(), shifted, boot=500)
    assert result["delta"] == pytest.approx(0.1)
    assert result["ci"] == pytest.approx([0.1, 0.1])  # the same items are drawn for both runs
    wo = paired_delta(rows(), shifted, metric="score_wo_others")
    assert wo["delta"] == pytest.approx(0.1) and "others" not in wo["categories"]
    a = [{"id": "x1", "key": "open qa", "category": "open qa", "score": 1.0},
         {"id": "x2", "key": "open qa", "category": "open qa", "score": 0.0},
         {"id": "y1", "key": "extract", "category": "extract", "score": 0.5}]
    b = [dict(a[0], score=None), dict(a[1], score=0.5), dict(a[2], score=0.5)]
    result = paired_delta(a, b)
    # over the items scored in both (x2, y1): open qa 0.0 - 0.5, extract 0.5 - 0.5, macro -0.25
    assert (result["delta"], result["n_common"]) == (pytest.approx(-0.25), 2)
    assert result["ci"][0] <= -0.25 <= result["ci"][1]


def test_paired_delta_refuses_different_items():
    with pytest.raises(ValueError, match=r"the runs score different items \(1 only in the first, 0 only in the "
                                         r"second, e.g. id 'k1'\): compare runs scored on the same eval set"):
        paired_delta(rows(), rows(MINI[:-1]))
    moved = rows()
    moved[0] = dict(moved[0], category="extract")
    with pytest.raises(ValueError, match="id 'o1' is 'open qa' in the first run and 'extract' in the second"):
        paired_delta(rows(), moved)
    with pytest.raises(ValueError, match="metric='mean': choose one of score, score_wo_others"):
        paired_delta(rows(), rows(), metric="mean")


def test_bad_rows_are_refused():
    with pytest.raises(ValueError, match="id 'o1' is scored twice"):
        summarize(rows() + rows()[:1])
    with pytest.raises(ValueError, match="score '0.5' is not a finite number"):
        summarize([dict(rows()[0], score="0.5")])
    with pytest.raises(ValueError, match="score nan is not a finite number"):
        summarize([dict(rows()[0], score=float("nan"))])
    with pytest.raises(ValueError, match="has no 'category'"):
        summarize([{"id": "a", "key": "x", "score": 1.0}])
    with pytest.raises(ValueError, match="boot=0"):
        summarize(rows(), boot=0)


def test_plot_writes_a_png(tmp_path):
    summary = summarize(rows([(i, k, None if k == "code" or k == "math" else s) for i, k, s in MINI]))
    path = plot_scores(summary, tmp_path / "scores.png", "tiny run")
    assert path == tmp_path / "scores.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    first = path.stat().st_size
    plot_scores(summarize(rows()), path, "again")  # replaced whole
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and first > 1000
    assert [p.name for p in tmp_path.iterdir()] == ["scores.png"]  # no temp file left
