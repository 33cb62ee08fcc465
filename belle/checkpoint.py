"""Checkpoints in the run directory: ``checkpoints/step-NNNNNN/`` holds every rank's DeepSpeed states, written
straight to the run directory (shared storage on multi-node jobs, so no local copy of the shards is made), and
``checkpoints/latest`` names the newest complete one. It moves only after every rank has finished writing, so a job
killed mid-save resumes from the previous checkpoint, and a checkpoint damaged later (a truncated or lost shard) is
passed over for the previous intact one, as is a ``latest`` that is damaged or names anything but a checkpoint
folder; beyond the newest ``keep_last`` intact checkpoints, by step, older ones are removed.
"""

import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from belle.rundir import CHECKPOINTS, LATEST, MANIFEST, size_mismatch, write_atomic


def step_dir_name(step: int) -> str:
    """Folder name of the checkpoint taken after optimizer step ``step``."""
    return f"step-{step:06d}"


class CheckpointError(ValueError):
    """The run has checkpoints but none it can resume from; the message names the fix."""


def latest(run_dir: Path, on_skip: Callable[[Path, str], None] | None = None) -> Path | None:
    """The newest intact checkpoint folder of the run, or None when it has none (a fresh start).

    The one ``latest`` names comes first. A ``latest`` that cannot be trusted (a symlink, not JSON, or naming
    anything but a ``step-N`` folder of checkpoints/) gives way to the newest intact ``step-N`` folder; a folder that
    is gone, a symlink, or whose files no longer match the sizes its manifest recorded at save time (a truncated or
    deleted shard) to the next older intact one; ``on_skip(path, why)`` is told each time. A run whose checkpoints
    are all damaged is a CheckpointError, never a fresh start. Every rank decides alike: they read the same files."""
    checkpoints = Path(run_dir) / CHECKPOINTS
    pointer = checkpoints / LATEST
    named, untrusted = _named(pointer)
    if untrusted and on_skip:
        on_skip(pointer, untrusted)
    steps = {f for f in checkpoints.glob("step-*") if _STEP.fullmatch(f.name)}
    candidates = sorted(steps | ({named} if named else set()), key=_step_of, reverse=True)
    for folder in candidates[candidates.index(named) if named else 0:]:
        why = _damage(folder, legacy=folder == named)
        if why is None:
            return folder
        if on_skip:
            on_skip(folder, why)
    if not os.path.lexists(pointer):
        return None  # no save ever completed (a first save cut short leaves a folder without manifest)
    newest = f"the newest: {named.name}" if named else f"{LATEST} {untrusted.removeprefix('it ')}"
    raise CheckpointError(
        f"no checkpoint in {checkpoints} can be resumed from ({newest}): restore the damaged files, or "
        "set launcher.run_dir to a new directory to train from the start"
    )


def say_skipped(folder: Path, why: str) -> None:
    """The console line for a checkpoint ``latest`` passes over (its ``on_skip``, from one process of the run)."""
    print(f"warning: checkpoint {folder.name} cannot be resumed from ({why}): trying the one before", flush=True)


_STEP = re.compile(r"step-[0-9]+")
"""The name of a checkpoint folder (step_dir_name)."""


def _step_of(folder: Path) -> int:
    """The step of a checkpoint folder named by step_dir_name."""
    return int(folder.name.removeprefix("step-"))


def _named(pointer: Path) -> tuple[Path | None, str | None]:
    """The folder ``latest`` names, or None and why it cannot be trusted ("it …"; None when there is no pointer)."""
    if not os.path.lexists(pointer):
        return None, None
    if pointer.is_symlink() or not pointer.is_file():
        return None, f"it is {'a symlink' if pointer.is_symlink() else 'no regular file'}, not the file a save writes"
    try:
        name = json.loads(pointer.read_text()).get("dir")
    except (OSError, ValueError, AttributeError):
        return None, "it is not the JSON a save writes"
    if not isinstance(name, str) or not _STEP.fullmatch(name):
        return None, f"it names {name!r}, not a step-N folder of {pointer.parent}"
    return pointer.parent / name, None


def _damage(folder: Path, legacy: bool) -> str | None:
    """Why ``folder`` cannot be resumed from, or None. Without a manifest only the folder ``latest`` names counts
    (checkpoints written before manifests existed)."""
    if folder.is_symlink():
        return "it is a symlink, not a folder the run saved"
    if not folder.is_dir():
        return "its folder is gone"
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return None if legacy else "it has no manifest (an unfinished save)"
    try:
        sizes = json.loads(manifest.read_text())
    except (OSError, ValueError):
        sizes = None
    if not isinstance(sizes, dict):
        return f"its {MANIFEST} is not the JSON a save writes"
    return size_mismatch(folder, sizes)


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
    _prune(checkpoints, step, keep_last)


def _prune(checkpoints: Path, step: int, keep_last: int) -> None:
    """Keep the ``keep_last`` newest checkpoints a resume could use, counted by step from ``step`` (just committed)
    down; remove the other step folders: damaged ones, and those of later steps (left by a run that resumed from an
    older checkpoint: unfinished, damaged, or of the history it abandoned). Symlinks are neither followed nor
    removed."""
    folders = [f for f in checkpoints.glob("step-*") if _STEP.fullmatch(f.name) and f.is_dir() and not f.is_symlink()]
    kept = 0
    for folder in sorted(folders, key=_step_of, reverse=True):
        if _step_of(folder) <= step and kept < keep_last and _damage(folder, legacy=True) is None:
            kept += 1
        else:
            shutil.rmtree(folder, ignore_errors=True)
