"""Checkpoints in the run directory: ``checkpoints/step-NNNNNN/`` holds every rank's DeepSpeed states, written
straight to the run directory (shared storage on multi-node jobs, so no local copy of the shards is made), and
``checkpoints/latest`` names the newest complete one. It moves only after every rank has finished writing, so a job
killed mid-save resumes from the previous checkpoint; older checkpoints are removed beyond ``keep_last``.
"""

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from belle.rundir import CHECKPOINTS, LATEST, write_atomic


def step_dir_name(step: int) -> str:
    """Folder name of the checkpoint taken after optimizer step ``step``."""
    return f"step-{step:06d}"


def latest(run_dir: Path) -> Path | None:
    """The newest complete checkpoint folder of the run, or None before the first one."""
    pointer = Path(run_dir) / CHECKPOINTS / LATEST
    if not pointer.is_file():
        return None
    return pointer.parent / json.loads(pointer.read_text())["dir"]


def save(run_dir: Path, step: int, keep_last: int, write: Callable[[Path], None]) -> Path:
    """Called on every rank: ``write(folder)`` stores this rank's part (collective, like DeepSpeed's
    save_checkpoint); then rank 0 moves ``latest`` and removes checkpoints beyond the newest ``keep_last``."""
    import torch.distributed as dist

    checkpoints = Path(run_dir) / CHECKPOINTS
    folder = checkpoints / step_dir_name(step)
    if dist.get_rank() == 0:
        shutil.rmtree(folder, ignore_errors=True)  # what a save killed half-way through left behind
        folder.mkdir(parents=True)
    dist.barrier()
    write(folder)
    dist.barrier()  # every rank's files are on disk
    if dist.get_rank() == 0:
        write_atomic(checkpoints / LATEST, json.dumps({"step": step, "dir": step_dir_name(step)}))
        for old in sorted(checkpoints.glob("step-*"))[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    return folder
