"""The run directory's one way of writing: whole files and folders, never a part, nothing left behind."""

import os
import stat
import threading

import pytest

from belle import rundir


def test_write_atomic_replaces_whole_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "deep" / rundir.SUMMARY
    rundir.write_atomic(path, "old\n")
    monkeypatch.setattr(os, "replace", lambda *_: (_ for _ in ()).throw(OSError("disk gone")))
    with pytest.raises(OSError):
        rundir.write_atomic(path, "new\n")
    assert path.read_text() == "old\n"
    assert [p.name for p in path.parent.iterdir()] == [rundir.SUMMARY]


def test_create_once_keeps_the_first_writer(tmp_path):
    path = tmp_path / rundir.WANDB_ID
    seen = []
    threads = [threading.Thread(target=lambda i=i: seen.append(rundir.create_once(path, f"{i}\n"))) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 1 and path.read_text() == seen[0]
    assert [p.name for p in tmp_path.iterdir()] == [rundir.WANDB_ID]


def test_staged_dir_replaces_a_folder_whole_or_not_at_all(tmp_path):
    target = tmp_path / rundir.EXPORT
    with rundir.staged_dir(target) as staging:
        (staging / "a").write_text("1")
    with pytest.raises(KeyError), rundir.staged_dir(target) as staging:
        (staging / "b").write_text("2")
        raise KeyError("crashed half-way")
    assert [p.name for p in target.iterdir()] == ["a"]
    with rundir.staged_dir(target) as staging:
        (staging / "c").write_text("3")
    assert [p.name for p in target.iterdir()] == ["c"]
    with rundir.staged_dir(target, keep_existing=True) as staging:
        (staging / "d").write_text("4")
    assert [p.name for p in target.iterdir()] == ["c"]
    assert [p.name for p in tmp_path.iterdir()] == [rundir.EXPORT]


def test_summary_round_trip(tmp_path):
    assert rundir.read_summary(tmp_path) is None
    rundir.write_summary(tmp_path, {"status": "completed", "steps": 3})
    assert rundir.read_summary(tmp_path) == {"status": "completed", "steps": 3}


def test_run_files_follow_the_umask_not_mkstemps_0600(tmp_path, monkeypatch):
    """Run files on shared storage are readable by teammates, as any file ``open`` creates would be."""
    monkeypatch.setattr(rundir, "_UMASK", 0o022)
    rundir.write_atomic(tmp_path / rundir.SUMMARY, "{}")
    with rundir.staged_dir(tmp_path / "folder") as staging:
        (staging / "x").write_text("x")
    assert stat.S_IMODE((tmp_path / rundir.SUMMARY).stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == 0o755


def test_a_staged_folder_follows_the_umask_whatever_its_writer_did(tmp_path):
    """transformers writes model.safetensors through a temp file (0600): an export must be readable like any run
    file (the modes a plain open and mkdir give under the process's umask)."""
    with rundir.staged_dir(tmp_path / "export") as staging:
        os.close(os.open(staging / "model.safetensors", os.O_CREAT | os.O_WRONLY, 0o600))
        (staging / "adapter").mkdir(mode=0o700)
        os.close(os.open(staging / "adapter" / "run.sh", os.O_CREAT | os.O_WRONLY, 0o700))
        os.chmod(staging / "model.safetensors", 0o600)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "export").rglob("*")}
    assert modes == {"model.safetensors": 0o666 & ~rundir._UMASK, "adapter": 0o777 & ~rundir._UMASK,
                     "run.sh": 0o777 & ~rundir._UMASK}
