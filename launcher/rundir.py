"""The run directory contract: files are written whole (temp file + rename) and never over another run's."""

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

from belle.monitor.secrets import scrub


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
_RUN_FILES = ("summary.json", "metrics.jsonl", "checkpoints")


def check_reusable(run_dir: Path, config: dict) -> None:
    """Refuse a run directory that holds a run of another config (reusing a directory resumes that run)."""
    old_file = run_dir / "config.yaml"
    if not old_file.is_file() or not any((run_dir / f).exists() for f in _RUN_FILES):
        return
    old = yaml.safe_load(old_file.read_text())
    changed = [k for k in _differences(old, scrub(config)) if k not in _RUN_CONTROL]
    if changed:
        shown = ", ".join(changed[:3]) + (" …" if len(changed) > 3 else "")
        raise ValueError(
            f"launcher.run_dir={run_dir} holds a run with another config (differs at {shown}): "
            "set launcher.run_dir (or launcher.name) to a new directory, or rerun with that run's settings to resume"
        )


def write_run_files(run_dir: Path, config: dict, plan: dict) -> None:
    """config.yaml (resolved, secrets removed) and plan.json, each written whole."""
    write_atomic(run_dir / "config.yaml", yaml.safe_dump(scrub(config), sort_keys=False, allow_unicode=True))
    write_atomic(run_dir / "plan.json", json.dumps(plan, indent=2, ensure_ascii=False) + "\n")
