"""An evaluation's scoring, after its answers are written: every item scored by the judge (or a rule), its row
appended to eval/items.jsonl as it is judged, then eval/scores.json (the paper's per-class and per-category means,
both macro averages, bootstrap intervals, unscored counts and what the numbers were scored with) and scores.png."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from pathlib import Path

from belle import rundir
from belle.config.evaluate import EvalConfig
from belle.data.eval_set import EvalItem
from belle.data.records import resolve_paths


def eval_set_hash(path: str) -> str:
    """SHA-256 of the eval set's files, in order: two runs scored the same items only if this matches."""
    digest = hashlib.sha256()
    for file in resolve_paths(path):
        digest.update(Path(file).read_bytes())
    return digest.hexdigest()


def _judge(settings: EvalConfig, run_dir: Path):
    """The judge of ``settings`` (belle.score.judge) with its cache."""
    from belle.score.belle_judge import REASK, TEMPLATE_VERSION, parse_score
    from belle.score.http import Endpoint
    from belle.score.judge import Judge, JudgeCache

    j = settings.judge
    endpoint = Endpoint.from_env(
        j.url, j.api_key_env, timeout_s=j.timeout_s, max_attempts=j.max_attempts, name="judge endpoint",
        key_hint=f"${j.api_key_env} (eval.judge.api_key_env)",
    )
    cache = JudgeCache(Path(j.cache) if j.cache else run_dir / rundir.JUDGE_CACHE)
    return Judge(endpoint, j.model, template_version=TEMPLATE_VERSION, parse=parse_score, reask=REASK,
                 concurrency=j.concurrency, sampling={"temperature": 0, "max_tokens": j.max_tokens}, cache=cache)


def score_items(settings: EvalConfig, run_dir: Path, items: list[EvalItem], answers: dict[str, str],
                prompts: dict[str, str], beat: Callable[[int], None], replies: dict[str, str] | None = None
                ) -> list[dict]:
    """Score every item's answer; each row is appended to eval/items.jsonl (rewritten from the start: a judged
    item comes from the judge cache) as soon as it is scored, and ``beat(n)`` is called with the rows so far.
    ``replies``: a local judge model's reply to each item's message by item id (eval.judge.model_path), parsed
    here instead of asking the endpoint."""
    from belle.score.belle_judge import TEMPLATE_VERSION, judge_message
    from belle.score.rules import rule, unscorable

    path = Path(run_dir) / rundir.EVAL_ITEMS
    path.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict | None] = [None] * len(items)
    lock = threading.Lock()
    with open(path, "w", encoding="utf-8") as file:

        def keep(index: int, row: dict) -> None:
            item = items[index]
            row = {"id": item.id, "class": item.cls, "key": item.key, "category": item.category,
                   "question": item.question, "reference": item.reference, "response": answers[item.id], **row}
            agreement = settings.agreement_rule if settings.scorer == "judge" else None
            if agreement and item.key in settings.agreement_classes:
                why = unscorable(agreement, item.reference)
                row["rule"] = {"name": agreement, "score": None if why else rule(agreement)(row["response"],
                                                                                           item.reference),
                               "unscorable": why}
            with lock:
                rows[index] = row
                file.write(json.dumps(row, ensure_ascii=False) + "\n")
                file.flush()
                beat(sum(r is not None for r in rows))

        if settings.scorer == "rule":
            for index, item in enumerate(items):
                why = unscorable(settings.rule, item.reference)
                score = None if why else rule(settings.rule)(answers[item.id], item.reference)
                keep(index, {"score": score, "scorer": f"rule:{settings.rule}", "status": "unscorable" if why else
                             "scored", "error": why, "attempts": 0})
        elif replies is not None:
            from belle.score.belle_judge import parse_score

            for index, item in enumerate(items):
                score = parse_score(replies[item.id])
                keep(index, {"score": score, "scorer": f"judge:{settings.judge.model_path}:{TEMPLATE_VERSION}",
                             "status": "scored" if score is not None else "judge_unparsed",
                             "judge_reply": replies[item.id], "error": None, "attempts": 1, "cached": False,
                             "judge_model": settings.judge.model_path})
        else:
            judge = _judge(settings, run_dir)
            messages = [judge_message(prompts[item.key], item, answers[item.id]) for item in items]

            def judged(index: int, judgment) -> None:
                keep(index, {"score": judgment.score, "scorer": f"judge:{settings.judge.model}:{TEMPLATE_VERSION}",
                             "status": judgment.status, "judge_reply": judgment.reply, "error": judgment.error,
                             "attempts": judgment.attempts, "cached": judgment.cached,
                             "judge_model": judgment.judge_model})

            judge.judge_all(messages, on_done=judged)
    return rows


def write_scores(settings: EvalConfig, run_dir: Path, rows: list[dict], produced: dict) -> dict:
    """eval/scores.json and eval/scores.png from the item rows; ``produced`` says what answered and on which set
    (model, generation settings, eval-set hash). Returns the scores."""
    from belle.score.aggregate import summarize
    from belle.score.belle_judge import TEMPLATE_VERSION
    from belle.score.plot import plot_scores

    scores = summarize(rows, boot=settings.boot, seed=settings.seed)
    reported = sorted({r["judge_model"] for r in rows if r.get("judge_model")})
    scores["scored_with"] = (
        {"scorer": "judge", "judge_model": settings.judge.model or settings.judge.model_path,
         "judge_model_reported": reported, "judge_url": settings.judge.url, "template": TEMPLATE_VERSION}
        if settings.scorer == "judge" else {"scorer": "rule", "rule": settings.rule})
    agreed = [r for r in rows if r.get("rule") and r["rule"]["score"] is not None and r["score"] is not None]
    if settings.scorer == "judge" and settings.agreement_rule:
        scores["agreement"] = {
            "rule": settings.agreement_rule, "classes": settings.agreement_classes, "items": len(agreed),
            "rule_mean": _mean([r["rule"]["score"] for r in agreed]),
            "judge_mean": _mean([r["score"] for r in agreed]),
            "agree": _mean([float((r["score"] >= 0.5) == (r["rule"]["score"] >= 0.5)) for r in agreed]),
        }
    scores |= produced
    rundir.write_atomic(Path(run_dir) / rundir.EVAL_SCORES, json.dumps(scores, indent=2, ensure_ascii=False) + "\n")
    plot_scores(scores, Path(run_dir) / rundir.EVAL_PLOT, f"{produced.get('model', {}).get('path') or 'model'}: score "
                                     f"{_fmt(scores['score']['mean'])}")
    return scores


def headline(scores: dict) -> str:
    """One line: both macro averages with their intervals, and what is missing from them."""
    s, w = scores["score"], scores["score_wo_others"]
    (s_lo, s_hi), (w_lo, w_hi) = s["ci"] or (None, None), w["ci"] or (None, None)
    line = (f"score {_fmt(s['mean'])} [{_fmt(s_lo)}, {_fmt(s_hi)}], w/o others {_fmt(w['mean'])} "
            f"[{_fmt(w_lo)}, {_fmt(w_hi)}] over {scores['n']} items")
    unscored = scores["unscored"]["total"]
    if unscored:
        line += f"; {unscored} item(s) UNSCORED (left out of the means: see eval/items.jsonl)"
    return line


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _fmt(value) -> str:
    return "?" if value is None else f"{value:.3f}"
