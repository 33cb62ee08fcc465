"""Checkpoints in the run directory: ``checkpoints/step-NNNNNN/`` holds every rank's DeepSpeed states, written
straight to the run directory (shared storage on multi-node jobs, so no local copy of the shards is made), and
``checkpoints/latest`` names the newest complete one. It moves only after every rank has finished writing, so a job
killed mid-save resumes from the previous checkpoint, and a checkpoint damaged later (a truncated or lost shard) is
passed over for the previous intact one; older checkpoints are removed beyond ``keep_last``.
"""

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from belle.rundir import CHECKPOINTS, LATEST, MANIFEST, write_atomic


def step_dir_name(step: int) -> str:
    """Folder name of the checkpoint taken after optimizer step ``step``."""
    return f"step-{step:06d}"


def latest(run_dir: Path, on_skip: Callable[[Path, str], None] | None = None) -> Path | None:
    """The newest intact checkpoint folder of the run, or None before the first one.

    The one ``latest`` names comes first; a folder that is gone, or whose files no longer match the sizes its
    manifest recorded at save time (a truncated or deleted shard), is skipped for the next older intact one, and
    ``on_skip(folder, why)`` is told. Every rank decides alike: they read the same files."""
    checkpoints = Path(run_dir) / CHECKPOINTS
    pointer = checkpoints / LATEST
    if not pointer.is_file():
        return None
    named = checkpoints / json.loads(pointer.read_text())["dir"]
    candidates = sorted({named, *checkpoints.glob("step-*")}, reverse=True)
    for folder in candidates[candidates.index(named):]:
        why = _damage(folder, legacy=folder == named)
        if why is None:
            return folder
        if on_skip:
            on_skip(folder, why)
    raise RuntimeError(
        f"no checkpoint in {checkpoints} can be resumed from (the newest: {named.name}): restore the damaged files, "
        f"or remove {pointer} to train from the start"
    )


def _damage(folder: Path, legacy: bool) -> str | None:
    """Why ``folder`` cannot be resumed from, or None. Without a manifest only the folder ``latest`` names counts
    (checkpoints written before manifests existed)."""
    if not folder.is_dir():
        return "its folder is gone"
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return None if legacy else "it has no manifest (an unfinished save)"
    for name, size in json.loads(manifest.read_text()).items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} when saved"
    return None


def save(run_dir: Path, step: int, keep_last: int, write: Callable[[Path], None]) -> Path:
    """Called on every rank: ``write(folder)`` stores this rank's part (collective, like DeepSpeed's
    save_checkpoint); then rank 0 moves ``latest`` and removes checkpoints beyond the newest ``keep_last``."""
    import torch.distributed as dist

    folder = Path(run_dir) / CHECKPOINTS / step_dir_name(step)
    if dist.get_rank() == 0:
        begin(run_dir, step)
    dist.barrier()
    write(folder)
    dist.barrier()  # every rank's files are on disk
    if dist.get_rank() == 0:
        commit(run_dir, step, keep_last)
    return folder


def begin(run_dir: Path, step: int) -> Path:
    """Start the checkpoint of ``step``: its folder, empty (what a save killed half-way through left is removed).
    One process calls it: rank 0, or a driver that is no rank (PPO's controller, whose roles then write into it)."""
    folder = Path(run_dir) / CHECKPOINTS / step_dir_name(step)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def commit(run_dir: Path, step: int, keep_last: int) -> None:
    """Finish the checkpoint of ``step`` once every file is written (by the caller of ``begin``): its manifest, then
    ``latest`` moved to it, then the checkpoints beyond the newest ``keep_last`` removed."""
    checkpoints = Path(run_dir) / CHECKPOINTS
    folder = checkpoints / step_dir_name(step)
    sizes = {str(f.relative_to(folder)): f.stat().st_size for f in sorted(folder.rglob("*")) if f.is_file()}
    write_atomic(folder / MANIFEST, json.dumps(sizes, indent=0))
    write_atomic(checkpoints / LATEST, json.dumps({"step": step, "dir": step_dir_name(step)}))
    for old in sorted(checkpoints.glob("step-*"))[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
