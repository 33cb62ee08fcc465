"""What a training worker group needs before its workers start, done once on the launching machine: the prepared
data cache, enough rows for an optimizer step, and for a resumed run the same rows it trained on
(<run_dir>/data-cache.json)."""

import json
from pathlib import Path

from belle.config import JobConfig
from belle.rundir import DATA_CACHE, write_atomic


def prepare(job: JobConfig, run_dir: Path | None) -> None:
    """Before any worker starts: the data cache (prepared here unless one matches), checked to give an optimizer
    step; with a run dir (a launch, not launcher.prepare), checkpoints none of which resumes and other data than
    the run trained on are refused, and data-cache.json records the rows it trains on."""
    from belle import checkpoint

    if run_dir is not None:
        checkpoint.latest(run_dir)  # raises for checkpoints none of which resumes
    prepared = prepare_data(job)
    if run_dir is None:
        return
    check_steps(job, prepared.meta["splits"])
    check_same_data(job, run_dir, prepared)
    write_atomic(Path(run_dir) / DATA_CACHE, json.dumps(data_record(prepared)) + "\n")


def prepare_data(job: JobConfig):
    """The job's data cache (belle.data.prepare): reused when one matches, else prepared here over this machine's
    cores, once per job and before any worker starts. Prints where it is and what it holds."""
    from belle.data.prepare import prepare as prepare_cache
    from belle.model.load import load_tokenizer

    prepared = prepare_cache(job.data, load_tokenizer(job.model))
    print(prepared.describe(), flush=True)
    return prepared


def check_steps(job: JobConfig, splits: dict) -> None:
    """Refuse prepared data that gives the run no optimizer step (the workers would find out only after Ray)."""
    from belle.data.records import DataError
    from belle.strategy import optimizer_steps

    rows, held_out = splits["train"]["rows"], splits["eval"]["rows"]
    s = job.strategy
    if optimizer_steps(rows, s, job.cluster.world_size, job.train.epochs, job.train.max_steps) == 0:
        raise DataError(
            f"the prepared data has {rows} training rows ({held_out} more held out by data.eval_samples="
            f"{job.data.eval_samples}), too few for one global batch of strategy.global_batch={s.global_batch}: "
            "set data.eval_samples or strategy.global_batch lower, or train.epochs higher"
        )


def data_record(prepared) -> dict:
    """What data-cache.json records of the prepared data a run trains on: its folder, each split's SHA-256 and the
    data files (path, size, mtime) it was made from."""
    splits = prepared.meta["splits"]
    return {"folder": str(prepared.folder), "sha256": {split: counts.get("sha256") for split, counts in splits.items()},
            "files": prepared.meta["key"]["files"]}


def _same_rows(before: dict, now: dict) -> bool:
    """Whether two data-cache.json records name the same prepared rows: by their digests, or by folder where the
    earlier has none (recorded before the rows had one)."""
    digests = before.get("sha256") or {}
    if digests and all(digests.values()):
        return digests == now["sha256"]
    return before["folder"] == now["folder"]


def _what_changed(before: dict, now: dict) -> str:
    """The first data file added, removed or changed (size, mtime) between two records, or that the rows did."""
    was, is_ = ({path: stat for path, *stat in record.get("files", [])} for record in (before, now))
    for path in sorted(was.keys() | is_.keys()):
        if path not in was:
            return f"{path} was added"
        if path not in is_:
            return f"{path} was removed"
        if was[path] != is_[path]:
            return f"{path} has changed"
    return "the prepared rows have changed"


def check_same_data(job: JobConfig, run_dir: Path, prepared) -> None:
    """Refuse to resume a checkpoint on other data than the run trained on (data-cache.json): its data position
    would continue in other rows. The same rows from touched or copied files resume."""
    from belle import checkpoint
    from belle.data.records import DataError

    pointer, latest = Path(run_dir) / DATA_CACHE, checkpoint.latest(run_dir)
    if latest is None or not pointer.is_file():
        return
    before, now = json.loads(pointer.read_text()), data_record(prepared)
    if _same_rows(before, now):
        return
    raise DataError(
        f"checkpoint {latest.name} was trained on data.path={job.data.path} as it was then, but "
        f"{_what_changed(before, now)} since: put "
        "the data files back as they were to resume, or start a new run on the new data (launcher.run_dir=<a new "
        "folder>)"
    )
