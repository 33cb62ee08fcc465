"""The launcher's side of the run directory (names and writes: belle.rundir): refuse one it must not write into,
then write the run's config.yaml and plan.json."""

import json
import os
from pathlib import Path
from typing import Any

import yaml

from belle import rundir
from belle.monitor.secrets import scrub

OWN_FILES = (rundir.CONFIG, rundir.PLAN, *rundir.RUN_FILES, rundir.EXPORT, rundir.LOSS_PLOT, rundir.PREVIEW)
"""Files the launcher writes or reads in a run directory: found in a directory it did not make, they are the user's."""


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [d for k in keys for d in _differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".")]


# Keys that may differ when a run is continued: what to do now and where Ray lives, not what the run is.
_RUN_CONTROL = (
    "launcher.dry_run", "launcher.preview", "launcher.prepare", "data.cache_dir", "cluster.address",
    "cluster.ray_temp_dir",
)


def _unusable(run_dir: Path, why: str) -> ValueError:
    return ValueError(f"launcher.run_dir={run_dir} {why}: set launcher.run_dir to a new directory")


def check_run_dir(run_dir: Path, config: dict) -> None:
    """Refuse, before anything is written, a run directory that is a file, cannot be written, holds files the
    launcher did not make (a user's own config.yaml), or holds a run of another config (reusing a directory
    resumes the run in it)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise _unusable(run_dir, "is a file")
    existing = next(p for p in (run_dir, *run_dir.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise _unusable(run_dir, f"cannot be written ({existing} is not writable)")
    if not run_dir.is_dir():
        return
    try:
        old_file = run_dir / rundir.CONFIG
        old = yaml.safe_load(old_file.read_text()) if old_file.is_file() else None
        # a config.yaml holding a job is a run of a launcher from before the marker
        made_here = (run_dir / rundir.MARKER).exists() or isinstance(old, dict) and {"launcher", "model"} <= set(old)
        theirs = [] if made_here else [n for n in OWN_FILES if (run_dir / n).exists()]
        if theirs:
            raise _unusable(run_dir, f"holds {', '.join(theirs)} that the launcher did not write")
        if old is None or not any((run_dir / f).exists() for f in rundir.RUN_FILES):
            return
    except OSError as exc:
        raise _unusable(run_dir, f"cannot be read ({exc.strerror})") from None
    except yaml.YAMLError:
        raise _unusable(run_dir, f"holds a {rundir.CONFIG} that is not valid YAML") from None
    changed = [k for k in _differences(old, scrub(config)) if k not in _RUN_CONTROL]
    if changed:
        shown = ", ".join(changed[:3]) + (" …" if len(changed) > 3 else "")
        raise ValueError(
            f"launcher.run_dir={run_dir} holds a run with another config (differs at {shown}): "
            "set launcher.run_dir (or launcher.name) to a new directory, or rerun with that run's settings to resume"
        )


def write_run_files(run_dir: Path, config: dict, plan: dict) -> None:
    """The marker of a launcher-made directory, config.yaml (resolved, secrets removed) and plan.json, each whole."""
    try:
        rundir.write_atomic(run_dir / rundir.MARKER, "a run directory of belle-launcher\n")
        rundir.write_atomic(run_dir / rundir.CONFIG, yaml.safe_dump(scrub(config), sort_keys=False, allow_unicode=True))
        rundir.write_atomic(run_dir / rundir.PLAN, json.dumps(plan, indent=2, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise _unusable(run_dir, f"cannot be written ({exc.strerror})") from None
