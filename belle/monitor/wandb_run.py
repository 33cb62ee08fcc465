"""Weights & Biases for rank 0 only: one run per job, kept across resumes by the id stored in run_dir/wandb_id."""

import os
import shlex
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from belle.config.run import MonitorConfig
from belle.monitor.secrets import scrub

ID_FILE = "wandb_id"


def has_wandb_key() -> bool:
    """Whether W&B credentials are configured, found as wandb.init finds them (no network call): WANDB_API_KEY,
    WANDB_IDENTITY_TOKEN_FILE, or a netrc entry (NETRC or ~/.netrc) for the W&B host (WANDB_BASE_URL)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    from wandb.sdk.lib.wbauth import read_netrc_auth

    try:
        return bool(read_netrc_auth(host=os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")))
    except Exception:  # an entry with a malformed key: wandb would refuse it too
        return False


ENV_MODES = {"online": "online", "run": "online", "offline": "offline", "dryrun": "offline", "disabled": "disabled"}
"""W&B's own WANDB_MODE values (with its aliases) and what they mean here."""


def resolve_mode(mode: str) -> str:
    """monitor.wandb_mode with ``auto`` resolved: WANDB_MODE where the user exported it (clusters without internet
    set offline or disabled), else online when a key is configured, else offline."""
    if mode != "auto":
        return mode
    exported = ENV_MODES.get(os.environ.get("WANDB_MODE", "").strip().lower())
    return exported or ("online" if has_wandb_key() else "offline")


def check_wandb_key(mode: str) -> None:
    """Refuse, on the submitting host, a WANDB_API_KEY that W&B would refuse in the workers after the bring-up."""
    key = os.environ.get("WANDB_API_KEY", "")
    if key and resolve_mode(mode) == "online" and (len(key.split("-")[-1]) < 40 or any(c.isspace() for c in key)):
        raise ValueError(
            f"WANDB_API_KEY has {len(key)} characters, not a W&B API key (40+ characters, no spaces): export the key "
            "from your W&B settings, or set monitor.wandb_mode=offline"
        )


def run_id(run_dir: Path) -> str:
    """The job's W&B run id: read from ``run_dir/wandb_id``, or created there once (a hard link never overwrites,
    so the file is whole and the first id wins)."""
    path = Path(run_dir) / ID_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{ID_FILE}.")
        with os.fdopen(fd, "w") as f:
            f.write(uuid.uuid4().hex[:8] + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    return path.read_text().strip()


@dataclass
class WandbRun:
    """The job's W&B run."""

    run: Any

    def log(self, record: dict, step: int) -> None:
        """Log a metrics record at optimizer step ``step`` (None values left out)."""
        self.run.log({k: v for k, v in record.items() if k != "step" and v is not None}, step=step)

    def finish(self, exit_code: int = 0) -> None:
        """Close the run (a non-zero code marks it failed) and flush it to disk or the server."""
        self.run.finish(exit_code=exit_code)


def start_wandb(
    monitor: MonitorConfig, run_dir: Path, name: str, config: dict, resume_step: int | None
) -> WandbRun | None:
    """Start (or continue, same id with resume="allow") the job's run under ``run_dir/wandb``; None when disabled.
    Offline runs print the command that uploads them."""
    mode = resolve_mode(monitor.wandb_mode)
    if mode == "disabled":
        return None
    import wandb

    run = wandb.init(
        project=monitor.wandb_project,
        entity=monitor.wandb_entity,
        group=monitor.wandb_group,
        name=name,
        id=run_id(run_dir),
        resume="allow",
        dir=run_dir,
        mode=mode,
        config=scrub(config),
    )
    if resume_step is not None:
        run.summary["resumed_from_step"] = resume_step
    if mode == "offline":  # each attempt of a resumed job writes its own folder with the same id: sync them in order
        folders = sorted(str(p) for p in Path(run.settings.sync_dir).parent.glob(f"offline-run-*-{run.id}*"))
        print(f"W&B is offline; upload this run with: wandb sync {shlex.join(folders)}", flush=True)
    return WandbRun(run)
