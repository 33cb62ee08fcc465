"""``python -m launcher.compare EVAL_RUN_DIR… [--baseline RUN_DIR] [--out DIR]``: BELLE's paper table from finished
method=eval runs — run, model, data, method, trainable parameters, hours per epoch measured, score, score w/o
others and each category, the paper's own score beside each paper experiment — as Markdown on the console and
comparison.{md,csv,png} in --out. Deltas against the baseline (the first run unless --baseline) come with paired
bootstrap intervals over the same items; a run scored on another eval set, judge, template or generation settings
is marked and gets no delta."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from belle import rundir
from belle.data.eval_set import CATEGORIES
from belle.model.source import model_source

COMPARED = ("eval_set_sha256", "scored_with", "generation")
"""What two evaluations must share for their scores to be compared."""


@dataclass
class Row:
    """One evaluated run: its scores and item rows, and the training run behind its model when there is one."""

    run_dir: Path
    scores: dict
    items: list[dict]
    trained: Path | None

    @property
    def name(self) -> str:
        return (self.trained or self.run_dir).name


def load(run_dir: str) -> Row:
    """A finished evaluation's files; the training run is the run dir whose export it answered with."""
    folder = Path(run_dir).expanduser()
    scores_file = folder / rundir.EVAL_SCORES
    if not scores_file.is_file():
        raise ValueError(f"{folder} holds no eval/scores.json: point at a finished method=eval run (or run "
                         f"python -m launcher method=eval model.path=<a run's export> first)")
    scores = json.loads(scores_file.read_text(encoding="utf-8"))
    items = [json.loads(line) for line in (folder / rundir.EVAL_ITEMS).read_text(encoding="utf-8").splitlines()]
    path = scores["model"]["path"]
    trained = None
    if path:
        source = model_source(path)
        for candidate in (Path(source.adapter or source.folder), *Path(source.adapter or source.folder).parents):
            if (candidate / rundir.PLAN).is_file() and (candidate / rundir.EXPORT).is_dir():
                trained = candidate
                break
    return Row(folder, scores, items, trained)


def _trained_facts(row: Row) -> dict:
    """Model, data, method, trainable parameters, measured hours per epoch and the paper's score of the run that
    trained the model (None where the model comes from elsewhere)."""
    if row.trained is None:
        return {"model": row.scores["model"]["path"] or "random", "data": None, "method": None, "trainable": None,
                "hours_per_epoch": None, "paper": None}
    plan = json.loads((row.trained / rundir.PLAN).read_text())
    config = yaml.safe_load((row.trained / rundir.CONFIG).read_text())
    summary = rundir.read_summary(row.trained) or {}
    per_epoch = plan["schedule"]["steps_per_epoch"]
    hours = None
    if summary.get("wall_time_s") and summary.get("steps") and per_epoch:
        hours = summary["wall_time_s"] / 3600 / summary["steps"] * per_epoch
    return {"model": plan["model"]["name"], "data": plan["data"]["name"], "method": plan["method"],
            "trainable": plan["model"]["params_trainable"], "hours_per_epoch": hours,
            "paper": (config.get("reference") or {}).get("score")}


def _differs(row: Row, baseline: Row) -> list[str]:
    return [key for key in COMPARED if row.scores.get(key) != baseline.scores.get(key)]


def table(rows: list[Row], baseline: Row) -> list[dict]:
    """One record per run: the paper table's columns, the delta against ``baseline`` with its interval, and what
    makes it not comparable (empty when it is)."""
    from belle.score.aggregate import paired_delta

    records = []
    categories = [c for c in CATEGORIES if any(c in r.scores["by_category"] for r in rows)]
    for row in rows:
        facts = _trained_facts(row)
        differs = _differs(row, baseline)
        delta = None
        if not differs and row is not baseline:
            delta = paired_delta(row.items, baseline.items, boot=row.scores.get("boot", 1000))
        record = {"run": row.name, **facts, "score": row.scores["score"]["mean"],
                  "score_wo_others": row.scores["score_wo_others"]["mean"],
                  **{c: (row.scores["by_category"].get(c) or {}).get("mean") for c in categories},
                  "unscored": row.scores["unscored"]["total"],
                  "delta": delta and delta["delta"], "delta_ci": delta and delta["ci"],
                  "not_comparable": ", ".join(differs)}
        records.append(record)
    return records


def _cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, list):
        return "[" + ", ".join(_cell(v) for v in value) + "]"
    if isinstance(value, int) and value >= 10_000:
        from belle.monitor.progress import short_count

        return short_count(value, digits=2)
    return str(value)


def markdown(records: list[dict], baseline: str) -> str:
    """The table as Markdown; the delta column is against ``baseline``."""
    columns = list(records[0])
    head = [("Δ vs " + baseline) if c == "delta" else c.replace("_", " ") for c in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r[c]) for c in columns) + " |" for r in records]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launcher.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="finished method=eval run directories")
    parser.add_argument("--baseline", help="the run the deltas are against (default: the first)")
    parser.add_argument("--out", default=".", help="folder for comparison.md, .csv and .png (default: here)")
    args = parser.parse_args(argv)
    try:
        rows = [load(run) for run in args.runs]
        baseline = load(args.baseline) if args.baseline else rows[0]
        if args.baseline and all(r.run_dir.resolve() != baseline.run_dir.resolve() for r in rows):
            rows.insert(0, baseline)
        baseline = next(r for r in rows if r.run_dir.resolve() == baseline.run_dir.resolve())
    except (ValueError, OSError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from belle.score.plot import plot_comparison

    records = table(rows, baseline)
    text = markdown(records, baseline.name)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rundir.write_atomic(out / "comparison.md", text + "\n")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(records[0]))
    writer.writeheader()
    writer.writerows(records)
    rundir.write_atomic(out / "comparison.csv", buffer.getvalue())
    plot_comparison([(r.name, r.scores) for r in rows], out / "comparison.png")
    print(text)
    refused = [r for r in records if r["not_comparable"]]
    for record in refused:
        print(f"note: {record['run']} is not comparable with {baseline.name}: its {record['not_comparable']} "
              "differ (no delta); score both with the same eval set, judge, template and generation settings")
    print(f"written: {out / 'comparison.md'}, {out / 'comparison.csv'}, {out / 'comparison.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
