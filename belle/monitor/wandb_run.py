"""Weights & Biases for rank 0 only: one run per job, kept across resumes by the id stored in run_dir/wandb_id."""

import functools
import os
import shlex
import socket
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from belle.config.run import MonitorConfig
from belle.monitor.secrets import scrub
from belle.rundir import WANDB_ID, create_once

DEFAULT_BASE_URL = "https://api.wandb.ai"
"""The W&B server where WANDB_BASE_URL names none."""
REACH_TIMEOUT_S = 3.0
"""How long the check that the W&B server is reachable waits (name lookup and TCP connection)."""


def base_url() -> str:
    """The W&B server's URL: WANDB_BASE_URL, else W&B's cloud."""
    return os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL


def has_wandb_key() -> bool:
    """Whether W&B credentials are configured, found as wandb.init finds them (no network call): WANDB_API_KEY,
    WANDB_IDENTITY_TOKEN_FILE, or a netrc entry (NETRC or ~/.netrc) for the W&B host (WANDB_BASE_URL)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    from wandb.sdk.lib.wbauth import read_netrc_auth

    try:
        return bool(read_netrc_auth(host=base_url()))
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
    """Refuse, on the submitting host, an online mode that W&B would refuse in rank 0 after the bring-up: a
    WANDB_API_KEY of the wrong shape, or no key at all (online asked for by monitor.wandb_mode or WANDB_MODE)."""
    if resolve_mode(mode) != "online":
        return
    key = os.environ.get("WANDB_API_KEY", "")
    if key and (len(key.split("-")[-1]) < 40 or any(c.isspace() for c in key)):
        raise ValueError(
            f"WANDB_API_KEY has {len(key)} characters, not a W&B API key (40+ characters, no spaces): export the key "
            "from your W&B settings, or set monitor.wandb_mode=offline"
        )
    if not has_wandb_key():
        asked = f"monitor.wandb_mode={mode}" if mode != "auto" else f"WANDB_MODE={os.environ.get('WANDB_MODE')}"
        raise ValueError(
            f"{asked} asks for W&B online but no API key is set for {base_url()}: export WANDB_API_KEY or run "
            "`wandb login`, or set monitor.wandb_mode=offline"
        )


def check_wandb(mode: str) -> None:
    """On the submitting host, before Ray: the key checks (``check_wandb_key``), then the server check of
    ``usable_mode`` (one line where the run will log offline instead, the W&B server being unreachable)."""
    check_wandb_key(mode)
    usable_mode(mode)


def usable_mode(mode: str) -> str:
    """``resolve_mode``, with online turned offline where the W&B server is unreachable from this host."""
    resolved = resolve_mode(mode)
    return "offline" if resolved == "online" and not _reachable_or_said(base_url()) else resolved


@functools.cache
def _reachable_or_said(url: str) -> bool:
    """Whether ``url``'s server is reachable; where not, one line says the run logs offline (once a process)."""
    if reachable(url):
        return True
    print(f"W&B server {url} is unreachable from {socket.gethostname()} (no connection within {REACH_TIMEOUT_S:g} s):"
          " logging offline instead; `wandb sync` uploads the run later (the command is printed when it starts)",
          flush=True)
    return False


def reachable(url: str, timeout: float = REACH_TIMEOUT_S) -> bool:
    """Whether a TCP connection to ``url``'s host and port (or to the proxy the environment sets for it) opens
    within ``timeout`` seconds, the name lookup included."""
    host, port = _endpoint(url)
    opened: list[bool] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            opened.append(True)
        except OSError:
            opened.append(False)

    thread = threading.Thread(target=attempt, daemon=True)  # getaddrinfo has no timeout of its own
    thread.start()
    thread.join(timeout)
    return opened == [True]


def _endpoint(url: str) -> tuple[str, int]:
    """(host, port) a client connects to for ``url``: its proxy's where the environment sets one, else its own."""
    from urllib.parse import urlsplit
    from urllib.request import getproxies, proxy_bypass

    parts = urlsplit(url)
    proxy = getproxies().get(parts.scheme)
    if proxy and not proxy_bypass(parts.hostname or ""):
        parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def run_id(run_dir: Path) -> str:
    """The job's W&B run id: read from ``run_dir/wandb_id``, or created there once (a hard link never overwrites,
    so the file is whole and the first id wins)."""
    path = Path(run_dir) / WANDB_ID
    return (path.read_text() if path.exists() else create_once(path, uuid.uuid4().hex[:8] + "\n")).strip()


@dataclass
class WandbRun:
    """The job's W&B run."""

    run: Any

    def log(self, record: dict, step: int) -> None:
        """Log a metrics record at optimizer step ``step`` (None values left out)."""
        self.run.log({k: v for k, v in record.items() if k != "step" and v is not None}, step=step)

    def table(self, name: str, rows: list[dict], step: int) -> None:
        """Log ``rows`` (dicts with the same keys) as the W&B table ``name`` at ``step``."""
        import wandb

        columns = list(rows[0]) if rows else []
        self.run.log({name: wandb.Table(columns=columns, data=[[row[c] for c in columns] for row in rows])},
                     step=step)

    def finish(self, exit_code: int = 0) -> None:
        """Close the run (a non-zero code marks it failed) and flush it to disk or the server."""
        self.run.finish(exit_code=exit_code)


def start_wandb(
    monitor: MonitorConfig, run_dir: Path, name: str, config: dict, resume_step: int | None
) -> WandbRun | None:
    """Start (or continue, same id with resume="allow") the job's run under ``run_dir/wandb``; None when disabled.
    Offline runs (asked for, or the W&B server unreachable from here) print the command that uploads them."""
    mode = usable_mode(monitor.wandb_mode)
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
