"""The run directory, the contract between a run and everything that reads it: the name of every file in it, and
the one way files are written there (whole: a temp file or folder beside the target, then one rename).

    <run_dir>/.belle-run             marks a directory the launcher made (it refuses to write into any other)
    <run_dir>/.belle-lock            held (flock) by the one launcher running the run; names it (host, pid, command)
    <run_dir>/config.yaml            the resolved job, secrets removed
    <run_dir>/plan.json              the plan
    <run_dir>/metrics.jsonl          one JSON object per logged step (rank 0)
    <run_dir>/summary.json           how the last attempt ended
    <run_dir>/loss.png               the loss curve
    <run_dir>/checkpoints/step-N/    every rank's states; checkpoints/latest names the newest complete one
    <run_dir>/export/                the trained model or adapter (a reward model's: reward_stats.json beside it)
    <run_dir>/generations.jsonl      method=generate: one row per (prompt id, sample), merged from generations/
    <run_dir>/generations/rank-N.jsonl  each worker's answers, appended and flushed as they come (a rerun skips them)
    <run_dir>/eval/                  method=eval: items.jsonl (each item's score), scores.json, scores.png,
                                     judge_cache.jsonl (an endpoint's judgments) or judge/ (a local judge's)
    <run_dir>/eval-steps/step-N/     train.eval_generate_every: the eval section's items scored at step N (eval/)
    <run_dir>/evaluation/            a training job's closing evaluation (a method=eval run dir of its own)
    <run_dir>/samples.jsonl          PPO: a few (prompt, response, score) rows every method.ppo.sample_every steps
    <run_dir>/progress/rank-N.json   each rank's last finished step; hang/: every rank's stacks at a hang
    <run_dir>/stop-requested         a graceful stop asked for (belle.stop); <run_dir>/stopped: the answer
    <run_dir>/wandb_id, wandb/       the W&B run's id and its local files
    <run_dir>/preview.jsonl          launcher.preview's samples
    <run_dir>/sweep.json             a sweep's points (in the sweep's directory)
    <run_dir>/slurm/                 the sbatch script, the job's log, its Ray head's address
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

MARKER = ".belle-run"
LOCK = ".belle-lock"
"""Held (fcntl.flock) by the launcher that writes or runs the run, so a second one is refused; records the holder."""
CONFIG = "config.yaml"
PLAN = "plan.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
LOSS_PLOT = "loss.png"
CHECKPOINTS = "checkpoints"
LATEST = "latest"
MANIFEST = "manifest.json"
"""In each checkpoint folder once every rank has saved: each file's size, to tell a damaged one at resume."""
CONTROLLER = "controller.json"
"""In each PPO checkpoint folder, beside actor/ and critic/: the controller's state (written last, before
``latest``)."""
PROGRESS = "progress"
"""One heartbeat file per rank (belle.heartbeat), read by the launcher's hang watchdog."""
HANG = "hang"
"""Every rank's stacks, written when the watchdog finds the run hung."""
PLACEMENT = "placement.json"
DATA_CACHE = "data-cache.json"
"""Where this run's prepared data is (written by the launcher once prepared): workers read it from there, so they
need to see the cache, not the data files its key is computed from."""
EXPORT = "export"
REWARD_STATS = "reward_stats.json"
"""Beside a reward model's export: mean and std of its scores on the held-out pairs (else the training pairs)."""
REFERENCE_LOG_PROBS = "reference-log-probs.pt"
"""In a DPO checkpoint folder under precomputed: the reference's (chosen, rejected) log-probs of every pair, per
split."""
GENERATIONS = "generations.jsonl"
"""method=generate's product: one row per (prompt id, sample), every one exactly once."""
GENERATION_SHARDS = "generations"
"""Each worker's answers as they come (rank-N.jsonl), merged into GENERATIONS at the end."""
EVAL_ITEMS = "eval/items.jsonl"
"""method=eval: one row per item (answer, score, scorer, the judge's reply or error), appended as each is scored."""
EVAL_SCORES = "eval/scores.json"
EVAL_PLOT = "eval/scores.png"
JUDGE_CACHE = "eval/judge_cache.jsonl"
JUDGE_ROWS = "eval/judge"
"""A local judge's (eval.judge.model_path) shards and merged replies, as generations/ and generations.jsonl."""
"""The judgments cache of a run (unless eval.judge.cache names a shared one)."""
EVAL_STEPS = "eval-steps"
"""train.eval_generate_every: one folder per scored step (step-NNNNNN/eval/items.jsonl)."""
EVALUATION = "evaluation"
"""A training job's closing evaluation of its export: a run dir of its own inside the training's."""
SAMPLES = "samples.jsonl"
"""PPO: a few (prompt, response, score) rows every method.ppo.sample_every steps."""
STOP_REQUEST = "stop-requested"
STOPPED = "stopped"
WANDB_ID = "wandb_id"
PREVIEW = "preview.jsonl"
SWEEP = "sweep.json"
SLURM_SCRIPT = "slurm/job.sbatch"
SLURM_LOG = "slurm/job-%j.log"
"""Slurm's --output pattern (%j: the job id)."""
SLURM_HEAD_INFO = "slurm/ray-head-{job_id}.json"
"""Where the Ray head of a Slurm job writes its address for the other nodes and the driver."""
SLURM_NODE_EXIT = "slurm/ray-node-{job_id}-{node}.json"
"""Where a node of a Slurm job records that its Ray ended before the job's teardown (exit code, last output line)."""
RUN_FILES = (SUMMARY, METRICS, CHECKPOINTS)
"""What a run that has started leaves behind (a directory holding none of them holds no run yet)."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()
"""The process's umask, read once at import (reading it means setting it, which is not thread-safe)."""


@contextmanager
def _temp_beside(path: Path) -> Iterator[Path]:
    """An empty temp file in ``path``'s folder (same file system, so it can be renamed or linked onto ``path``),
    removed when the block ends. It has the mode a plain ``open`` would give (mkstemp's 0600 would hide run files
    from teammates on shared run storage)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.fchmod(fd, 0o666 & ~_UMASK)
    os.close(fd)
    try:
        yield Path(tmp)
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temp file beside ``path`` to write; it replaces ``path`` in one rename when the block succeeds, so readers
    see the old file or the whole new one, never a part."""
    with _temp_beside(Path(path)) as tmp:
        yield tmp
        os.replace(tmp, path)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole (see ``replacing``)."""
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def create_once(path: Path, text: str) -> str:
    """Create ``path`` holding ``text`` unless it exists (a hard link never overwrites, so concurrent callers agree on
    the first one's file); return what the file holds."""
    path = Path(path)
    with _temp_beside(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
        with suppress(FileExistsError):
            os.link(tmp, path)
    return path.read_text(encoding="utf-8")


@contextmanager
def staged_dir(target: Path, keep_existing: bool = False) -> Iterator[Path]:
    """A fresh folder beside ``target`` to fill; when the block succeeds it takes target's place in one rename, else
    it is removed, so readers never see half a folder. What the block wrote gets the modes the umask gives (writers
    that go through temp files, as transformers' safetensors shards do, leave them 0600). A previous ``target`` is
    moved aside first and removed last; with ``keep_existing`` it stays and the new folder is dropped (a concurrent
    writer's is as good)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    staging.chmod(0o777 & ~_UMASK)
    previous = target.with_name(f"{staging.name}.previous")
    try:
        yield staging
        _follow_umask(staging)
        if keep_existing:
            try:
                staging.rename(target)
            except OSError:
                if not target.exists():
                    raise
            return
        if target.exists():
            target.rename(previous)
        staging.rename(target)
        shutil.rmtree(previous, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _follow_umask(folder: Path) -> None:
    """Every file and folder under ``folder`` with the mode a plain open or mkdir gives (executables stay so)."""
    for path in folder.rglob("*"):
        if path.is_symlink():
            continue
        executable = path.is_dir() or path.stat().st_mode & 0o111
        path.chmod((0o777 if executable else 0o666) & ~_UMASK)


def read_summary(run_dir: Path) -> dict | None:
    """The run's summary.json, or None before its first attempt ended."""
    path = Path(run_dir) / SUMMARY
    return json.loads(path.read_text()) if path.is_file() else None


def write_summary(run_dir: Path, summary: dict) -> None:
    """summary.json, written whole."""
    write_atomic(Path(run_dir) / SUMMARY, json.dumps(summary, indent=2) + "\n")


SUMMARY_FIELDS = ("status", "steps", "wall_time_s", "restarts", "note", "error")
"""The keys of every summary.json; the others are the recipe's results, lifted from its metrics (its SUMMARY)."""


def results(summary: dict) -> str:
    """A summary's results in words, e.g. ``final_loss 2.27, eval_loss 2.31`` (those never logged left out)."""
    return ", ".join(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
                     for key, value in summary.items() if key not in SUMMARY_FIELDS and value is not None)


def size_mismatch(folder: Path, sizes: dict[str, int]) -> str | None:
    """Why the files of ``folder`` differ from ``sizes`` (relative name → bytes recorded when they were written):
    the first one missing or of another size; None when every one matches. Nothing is read but their sizes."""
    for name, size in sizes.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} is {path.stat().st_size} bytes, not the {size} it was written with"
    return None

