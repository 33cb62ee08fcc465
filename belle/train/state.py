"""A DeepSpeed engine's state in a checkpoint folder, with every rank's random state: the one writer and reader
of both (``save_engine``, ``load_engine``), used by the SPMD recipes' save and resume and by PPO's trained roles."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from belle import checkpoint
from belle.config import JobConfig

CHECKPOINT_TAG = "state"
"""DeepSpeed's tag (the subfolder) of an engine's states in a checkpoint folder."""


def save_engine(engine, folder: Path, rank: int, client_state: dict | None = None) -> None:
    """``engine``'s states (DeepSpeed shards under CHECKPOINT_TAG, with ``client_state``) and this rank's random
    state (``rng-rank{rank}.pt``) into ``folder``; collective over the engine's world."""
    import torch

    engine.save_checkpoint(str(folder), tag=CHECKPOINT_TAG, client_state=dict(client_state or {}))
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    torch.save(rng, folder / f"rng-rank{rank}.pt")


def load_engine(engine, folder: Path, rank: int) -> dict:
    """Restore what ``save_engine`` wrote → the client state saved (DeepSpeed adds keys of its own). A missing
    random-state file (saved by another world size) is skipped: dropout draws differ, nothing else."""
    import torch

    _, saved = engine.load_checkpoint(str(folder), tag=CHECKPOINT_TAG)
    random_states = folder / f"rng-rank{rank}.pt"
    if random_states.is_file():
        rng = torch.load(random_states)
        torch.set_rng_state(rng["torch"])
        if torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    return saved


def resume(engine, run_dir: Path, state: dict, rank: int) -> Path | None:
    """Load the run's newest intact checkpoint into ``engine`` and ``state`` (the keys it has) and this rank's random
    state; return its folder, or None when the run starts fresh."""
    directory = checkpoint.latest(run_dir, on_skip=checkpoint.say_skipped if rank == 0 else None)
    if directory is None:
        return None
    saved = load_engine(engine, directory, rank)
    state.update({key: saved[key] for key in state})
    return directory


def saver(engine, run_dir: Path, state: dict, job: JobConfig, rank: int,
          extra: Callable[[Path], None] | None = None) -> Callable[[], None]:
    """``save()``: a checkpoint of ``engine`` with ``state`` and every rank's random state (and whatever ``extra``
    writes into the folder on every rank), ``latest`` moved once all are written."""
    def write(folder: Path) -> None:
        save_engine(engine, folder, rank, state)
        if extra:
            extra(folder)

    return lambda: checkpoint.save(run_dir, state["step"], job.train.keep_last, write)
