"""Claiming a run directory for a launch (its names and writes are belle.rundir's): refuse one the launcher must not
write into, hold it (one launcher per run directory at a time), then write the run's config.yaml and plan.json."""

import copy
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from belle import rundir
from belle.config.paths import absolute
from belle.monitor.secrets import scrub

OWN_FILES = (rundir.CONFIG, rundir.PLAN, *rundir.RUN_FILES, rundir.EXPORT, rundir.LOSS_PLOT, rundir.PREVIEW)
"""Files the launcher writes or reads in a run directory: found in a directory it did not make, they are the user's."""


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [d for k in keys for d in _differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".")]


# Keys that may differ when a run is continued: what to do now, where Ray lives and where the run is (the directory
# itself), not what the run is.
_RUN_CONTROL = (
    "launcher.dry_run", "launcher.preview", "launcher.prepare", "launcher.run_dir", "data.cache_dir",
    "cluster.address", "cluster.ray_temp_dir",
)


def _from_here(old: dict, paths: dict[str, bool]) -> dict:
    """``old`` with the relative values of ``paths`` (dotted key → a comma-separated list?) made absolute from the
    current directory: a config.yaml of a release that kept paths as written names the same files."""
    old = copy.deepcopy(old)
    for key, several in paths.items():
        *parents, leaf = key.split(".")
        section = old
        for name in parents:
            section = section.get(name) if isinstance(section, dict) else None
        if isinstance(section, dict) and isinstance(section.get(leaf), str):
            section[leaf] = absolute(section[leaf], Path.cwd(), several)
    return old


def _check_name_lengths(run_dir: Path) -> None:
    """Refuse a run directory path the file system cannot hold (a name longer than NAME_MAX bytes, a path near
    PATH_MAX), before any call on it fails with ENAMETOOLONG."""
    existing = next(p for p in (run_dir, *run_dir.parents) if os.path.lexists(p) or p == p.parent)
    name_max, path_max = os.pathconf(existing, "PC_NAME_MAX"), os.pathconf(existing, "PC_PATH_MAX")
    longest = max(run_dir.parts, key=lambda part: len(os.fsencode(part)))
    size = len(os.fsencode(longest))
    if size > name_max:
        raise ValueError(
            f"launcher.run_dir has a name of {size} bytes ({longest[:40]}…), more than the {name_max} a file name "
            "may have here: set a shorter launcher.name (it names the run directory) or launcher.run_dir"
        )
    if len(os.fsencode(str(run_dir))) > path_max - _ROOM:
        raise ValueError(
            f"launcher.run_dir is {len(os.fsencode(str(run_dir)))} bytes long, too long for the files a run keeps "
            f"in it (paths here may have {path_max} bytes): set a shorter launcher.run_dir"
        )


_ROOM = 256
"""Bytes of path left for what a run writes under its directory (checkpoints/step-N/…, ray/…)."""


def _unusable(run_dir: Path, why: str) -> ValueError:
    return ValueError(f"launcher.run_dir={run_dir} {why}: set launcher.run_dir to a new directory")


def check_run_dir(run_dir: Path, config: dict, paths: dict[str, bool]) -> None:
    """Refuse, before anything is written, a run directory whose path is too long, that is a file, cannot be
    written, holds files the launcher did not make (a user's own config.yaml), or holds a run of another config
    (reusing a directory resumes the run in it; ``paths``: the config's path keys, see ``_from_here``)."""
    _check_name_lengths(run_dir)
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
    changed = [k for k in _differences(_from_here(old, paths), scrub(config)) if k not in _RUN_CONTROL]
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


@contextmanager
def launching(run_dir: Path) -> Iterator[None]:
    """The block that writes a run's files and starts it: ``run_dir`` is held (``held``) throughout, and a bad input
    found inside it (a ValueError, e.g. a record the data preparation refuses) leaves the directory as it was."""
    before = _Before.take(run_dir)
    with held(run_dir):
        try:
            yield
        except ValueError:
            before.restore()
            raise


@contextmanager
def held(run_dir: Path, wait_s: float = 0) -> Iterator[None]:
    """Hold ``run_dir`` for the block: an exclusive flock on its lock file (belle.rundir.LOCK), which records the
    holder (host, pid, command, start time). Held elsewhere (still after ``wait_s`` seconds), it is refused in one
    line naming the holder. The kernel releases the lock when its process ends, however it ends."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / rundir.LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise _unusable(run_dir, f"cannot be written ({exc.strerror})") from None
    try:
        _lock(fd, run_dir, time.monotonic() + wait_s)
        holder = {"host": socket.gethostname(), "pid": os.getpid(), "command": " ".join(sys.orig_argv),
                  "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder, ensure_ascii=False) + "\n").encode(), 0)
        yield
    finally:
        os.close(fd)


def _lock(fd: int, run_dir: Path, deadline: float) -> None:
    """flock ``fd``, polling until ``deadline``; on storage without locks (Lustre mounted without -o flock) warn."""
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise ValueError(_in_use(run_dir, os.pread(fd, 65536, 0))) from None
            time.sleep(0.5)
        except OSError as exc:
            print(f"warning: {run_dir} cannot be locked ({exc.strerror}): a second launcher on it would not be "
                  "refused", file=sys.stderr)
            return


def _in_use(run_dir: Path, recorded: bytes) -> str:
    """The refusal of a run directory another launcher holds, naming that one from what it recorded."""
    try:
        h = json.loads(recorded)
        who = f"pid {h['pid']} on {h['host']} since {h['since']}: {h['command']}"
    except (ValueError, KeyError, TypeError):
        who = "it has not recorded who it is yet"
    who = " ".join(who.split())
    return (f"launcher.run_dir={run_dir} is in use by another launcher ({who[:300]}): wait for it to end or stop "
            "it, or set launcher.run_dir to another directory")


_KEPT = (rundir.MARKER, rundir.CONFIG, rundir.PLAN, rundir.SUMMARY, rundir.DATA_CACHE, rundir.PREVIEW,
         rundir.STOP_REQUEST, rundir.STOPPED, rundir.LOCK)
"""The files a launch writes or removes in its run directory before the run starts."""


@dataclass
class _Before:
    """A run directory before a launch: what ``restore`` puts back if the launch is refused before the run starts."""

    run_dir: Path
    made: list[Path]
    """The folders the launch creates (the run directory and its missing parents), deepest first."""
    files: dict[str, bytes]
    """Each of _KEPT that exists: its bytes."""
    others: dict[str, int]
    """Every other entry: its mtime (one that changes, or a new one, means the run started)."""

    @classmethod
    def take(cls, run_dir: Path) -> "_Before":
        made = [p for p in (run_dir, *run_dir.parents) if not p.exists()]
        entries = list(os.scandir(run_dir)) if run_dir.is_dir() else []
        files = {e.name: Path(e.path).read_bytes() for e in entries if e.name in _KEPT and e.is_file()}
        return cls(run_dir, made, files, _others(entries))

    def restore(self) -> None:
        """The launcher's files as they were, and the folders it made removed, unless the run started."""
        if _others(list(os.scandir(self.run_dir))) != self.others:
            return
        for name in _KEPT:
            path = self.run_dir / name
            if name in self.files:
                with rundir.replacing(path) as tmp:
                    tmp.write_bytes(self.files[name])
            else:
                path.unlink(missing_ok=True)
        for folder in self.made:
            with suppress(OSError):  # another run's folder appeared beside it in a parent
                folder.rmdir()


def _others(entries: list[os.DirEntry]) -> dict[str, int]:
    return {e.name: e.stat(follow_symlinks=False).st_mtime_ns for e in entries if e.name not in _KEPT}
