"""A data.cache_dir that is not a folder, is read-only or is full stops a launch before Ray in one line naming
data.cache_dir and the fix (exit code 2); the new run dir is left as it was (none: no summary stuck at running),
and nothing on disk is lost or left half-written. Real file systems: a file, a read-only mount (or a 0555 folder
when not root), a small tmpfs."""

import errno
import json
import os
import subprocess
from contextlib import contextmanager

import pytest

from belle.config import DataConfig
from belle.data.generate import generate_instruction_records
from belle.data.prepare import prepare
from belle.data.records import DataError

FIX = "set data.cache_dir=<a writable folder with room for the prepared data>"


@contextmanager
def _tmpfs(folder, options: str):
    """A tmpfs mounted on ``folder`` with mount ``options`` for the block, unmounted after (skips where this
    machine cannot mount)."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True,
                             text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}): needs root with CAP_SYS_ADMIN")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture
def read_only(tmp_path):
    """(a read-only folder, what the error says of it): a read-only mount as root (whom chmod does not stop), a
    0555 folder otherwise."""
    folder = tmp_path / "read-only"
    if os.geteuid() != 0:
        folder.mkdir(mode=0o555)
        yield folder, "is not writable (Permission denied)"
        folder.chmod(0o755)
        return
    with _tmpfs(folder, "ro,size=64k"):
        yield folder, "is on a read-only file system (Read-only file system)"


@pytest.fixture
def full(tmp_path):
    """A 64 KiB tmpfs filled to the last byte by ``fill``."""
    with _tmpfs(tmp_path / "full", "size=64k") as folder:
        with open(folder / "fill", "wb", buffering=0) as f, pytest.raises(OSError) as no_room:
            for _ in range(64):
                f.write(b"x" * 4096)
        assert no_room.value.errno == errno.ENOSPC
        yield folder


def _message(cache_dir, what: str) -> str:
    return f"data.cache_dir={cache_dir} {what}: {FIX}"


def _assert_failed_before_ray(run_dir, message: str) -> None:
    """Refused for bad input before Ray: the launcher leaves the new run dir as it found it (there was none)."""
    assert message and not run_dir.exists()


def _launch(cfg, tmp_path, cache_dir) -> str:
    """A launch in this process, stopped before Ray by the cache folder: its error."""
    from launcher.app import run

    with pytest.raises(DataError) as refused:
        run(cfg(f"launcher.run_dir={tmp_path / 'run'}", f"data.cache_dir={cache_dir}", "monitor.wandb_mode=offline"))
    return str(refused.value)


def test_a_file_as_cache_dir_exits_2_before_ray(cli, tmp_path):
    cache_dir = tmp_path / "cache"
    cache_dir.write_text("my notes\n")
    run_dir = tmp_path / "run"
    out = cli(f"launcher.run_dir={run_dir}", f"data.cache_dir={cache_dir}", "monitor.wandb_mode=offline")
    message = _message(cache_dir, "is not a folder (File exists)")
    assert out.returncode == 2, out.stderr
    assert out.stderr.splitlines() == [f"error: {message}"] and "Ray" not in out.stdout
    _assert_failed_before_ray(run_dir, message)
    assert cache_dir.read_text() == "my notes\n"


def test_a_read_only_cache_dir(cfg, tmp_path, read_only):
    folder, what = read_only
    assert _launch(cfg, tmp_path, folder) == _message(folder, what)
    _assert_failed_before_ray(tmp_path / "run", _message(folder, what))


def test_a_full_cache_dir(cfg, tmp_path, full):
    message = _message(full / "cache", "is on a full file system (No space left on device)")
    assert _launch(cfg, tmp_path, full / "cache") == message
    _assert_failed_before_ray(tmp_path / "run", message)
    assert (full / "fill").stat().st_size == 64 * 1024


def test_a_cache_dir_that_fills_up_while_preparing_keeps_nothing_half_written(tmp_path):
    """The probe byte fits; the arrays do not: the staging folder goes, what was there stays."""
    from belle.model.tokenizer import tiny_tokenizer

    records = tmp_path / "small.jsonl"
    records.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in generate_instruction_records(200)),
                       encoding="utf-8")
    with _tmpfs(tmp_path / "small", "size=16k") as folder:
        (folder / "keep.txt").write_text("kept\n")
        data = DataConfig(name="test", path=str(records), cache_dir=str(folder), max_length=128)
        with pytest.raises(DataError) as refused:
            prepare(data, tiny_tokenizer(), processes=1)
        assert str(refused.value) == (
            f"data.cache_dir={folder} is on a full file system (No space left on device): {FIX}")
        left = sorted(p.name for p in folder.iterdir())
        assert left[1:] == ["keep.txt"] and left[0].endswith(".lock")  # the build lock, empty
        assert (folder / "keep.txt").read_text() == "kept\n"
