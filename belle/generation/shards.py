"""The answers of a generation job on disk: each worker appends its rows to generations/rank-N.jsonl and flushes
them per batch, so a killed run loses at most the batch under way; a rerun reads every shard, skips the
(id, sample) units already answered and discards a torn last line; the merge writes generations.jsonl once every
unit is there exactly once."""

from __future__ import annotations

import json
from pathlib import Path

from belle import rundir

Unit = tuple[str, int]
"""(prompt id, sample index): what one row answers."""


def shard_path(run_dir: Path, rank: int) -> Path:
    return Path(run_dir) / rundir.GENERATION_SHARDS / f"rank-{rank}.jsonl"


def _read(path: Path) -> tuple[list[dict], int]:
    """The rows of one shard and the byte length of its whole lines (a torn last line, one a kill cut short, is
    left out; a damaged line before it is an error)."""
    rows, good = [], 0
    with open(path, "rb") as f:
        lines = f.readlines()
    for number, line in enumerate(lines, 1):
        try:
            if not line.endswith(b"\n"):
                raise ValueError("torn")
            rows.append(json.loads(line))
        except ValueError:
            if number == len(lines):
                break
            raise RuntimeError(
                f"{path}:{number} is not a JSON row: move {path} aside to answer its prompts again") from None
        good += len(line)
    return rows, good


def answered(run_dir: Path) -> dict[Unit, dict]:
    """Every unit some shard holds a whole row for → that row."""
    found: dict[Unit, dict] = {}
    for path in sorted((Path(run_dir) / rundir.GENERATION_SHARDS).glob("rank-*.jsonl")):
        for row in _read(path)[0]:
            found.setdefault((row["id"], row["sample"]), row)
    return found


class ShardWriter:
    """This worker's shard, its torn tail (if a kill left one) cut off, open for appending."""

    def __init__(self, run_dir: Path, rank: int):
        path = shard_path(run_dir, rank)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            _, good = _read(path)
            with open(path, "r+b") as f:
                f.truncate(good)
        self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (open until close(), across batches)

    def write(self, rows: list[dict]) -> None:
        """Append ``rows`` and flush them to the OS, so they outlive this process."""
        self.file.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def merge(run_dir: Path, expected: list[Unit]) -> int:
    """Write generations.jsonl (whole, in ``expected``'s order) from the shards, once each expected unit has
    exactly one row and no row answers another; → the rows written. Raises RuntimeError naming what is wrong."""
    rows: dict[Unit, dict] = {}
    repeated = []
    for path in sorted((Path(run_dir) / rundir.GENERATION_SHARDS).glob("rank-*.jsonl")):
        for row in _read(path)[0]:
            unit = (row["id"], row["sample"])
            if unit in rows:
                repeated.append(unit)
            rows[unit] = row
    missing = [unit for unit in expected if unit not in rows]
    extra = set(rows) - set(expected)
    if repeated or missing or extra:
        raise RuntimeError(
            f"the answers in {Path(run_dir) / rundir.GENERATION_SHARDS} do not cover the prompts exactly once: "
            f"{len(missing)} missing, {len(repeated)} answered twice, {len(extra)} for prompts not in data.path "
            f"(e.g. {(missing or repeated or sorted(extra))[0]}): rerun to answer the missing ones, or use a new "
            "launcher.run_dir if the prompts changed"
        )
    rundir.write_atomic(Path(run_dir) / rundir.GENERATIONS,
                        "".join(json.dumps(rows[unit], ensure_ascii=False) + "\n" for unit in expected))
    return len(expected)
