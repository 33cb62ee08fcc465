"""A DeepSpeed engine's state in a checkpoint folder, with every rank's random state: the save and the resume of
the SPMD recipes (PPO's trained roles use the same tag)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from belle import checkpoint
from belle.config import JobConfig

CHECKPOINT_TAG = "state"
"""DeepSpeed's tag (the subfolder) of an engine's states in a checkpoint folder."""


def resume(engine, run_dir: Path, state: dict, rank: int) -> Path | None:
    """Load the run's newest intact checkpoint into ``engine`` and ``state`` (the keys it has) and this rank's random
    state; return its folder, or None when the run starts fresh."""
    import torch

    def skipped(folder: Path, why: str) -> None:
        if rank == 0:
            print(f"warning: checkpoint {folder.name} cannot be resumed from ({why}): trying the one before",
                  flush=True)

    directory = checkpoint.latest(run_dir, on_skip=skipped)
    if directory is None:
        return None
    _, saved = engine.load_checkpoint(str(directory), tag=CHECKPOINT_TAG)
    state.update({key: saved[key] for key in state})  # DeepSpeed adds keys of its own
    random_states = directory / f"rng-rank{rank}.pt"
    if random_states.is_file():  # absent when the world size changed: dropout draws differ, nothing else
        saved = torch.load(random_states)
        torch.set_rng_state(saved["torch"])
        if torch.cuda.is_available():
            torch.cuda.set_rng_state(saved["cuda"])
    return directory


def saver(engine, run_dir: Path, state: dict, job: JobConfig, rank: int,
          extra: Callable[[Path], None] | None = None) -> Callable[[], None]:
    """``save()``: a checkpoint of ``engine`` with ``state`` and every rank's random state (and whatever ``extra``
    writes into the folder on every rank), ``latest`` moved once all are written."""
    import torch

    def write(folder: Path) -> None:
        engine.save_checkpoint(str(folder), tag=CHECKPOINT_TAG, client_state=dict(state))
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state()
        torch.save(rng, folder / f"rng-rank{rank}.pt")
        if extra:
            extra(folder)

    return lambda: checkpoint.save(run_dir, state["step"], job.train.keep_last, write)
