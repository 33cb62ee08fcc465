"""A resume continues on the data its checkpoint was trained on: the launcher refuses, before Ray, a run whose data
files were replaced since (one line naming the file and the fix); the same rows from a touched file resume. In this
process, no Ray."""

import json
import os
import shutil

import pytest

from belle import checkpoint
from belle.data.generate import generate_instruction_records
from belle.data.records import DataError
from belle.rundir import DATA_CACHE
from belle.train.prepare import check_same_data, data_record, prepare_data
from launcher.launch import launch


def _write_records(path, seed: int) -> None:
    lines = (json.dumps(r, ensure_ascii=False) + "\n" for r in generate_instruction_records(400, seed=seed))
    path.write_text("".join(lines), encoding="utf-8")


@pytest.fixture
def trained(job, tmp_path):
    """(job, run dir, data file): a run that prepared its data, recorded it and saved checkpoint step 2."""
    data = tmp_path / "data.jsonl"
    _write_records(data, seed=1)
    j = job(f"data.path={data}", f"data.cache_dir={tmp_path / 'cache'}", "data.max_length=128",
            "monitor.wandb_mode=offline", f"launcher.run_dir={tmp_path / 'run'}")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / DATA_CACHE).write_text(json.dumps(data_record(prepare_data(j))) + "\n")
    checkpoint.begin(run_dir, 2)
    checkpoint.commit(run_dir, 2, keep_last=2)
    return j, run_dir, data


def _refusal(job, data) -> str:
    return (f"checkpoint step-000002 was trained on data.path={data} as it was then, but {data.resolve()} has changed "
            "since: put the data files back as they were to resume, or start a new run on the new data "
            "(launcher.run_dir=<a new folder>)")


def test_replaced_data_is_refused_at_resume(trained):
    j, run_dir, data = trained
    _write_records(data, seed=2)
    with pytest.raises(DataError) as refused:
        check_same_data(j, run_dir, prepare_data(j))
    assert str(refused.value) == _refusal(j, data)


def test_a_touched_file_with_the_same_rows_resumes(trained):
    j, run_dir, data = trained
    recorded = json.loads((run_dir / DATA_CACHE).read_text())
    os.utime(data, ns=(data.stat().st_atime_ns, data.stat().st_mtime_ns + 10**9))
    prepared = prepare_data(j)
    assert str(prepared.folder) != recorded["folder"] and prepared.built  # another key, the same rows
    check_same_data(j, run_dir, prepared)


def test_without_a_checkpoint_new_data_starts_fresh(trained):
    j, run_dir, data = trained
    shutil.rmtree(run_dir / "checkpoints")
    _write_records(data, seed=2)
    check_same_data(j, run_dir, prepare_data(j))


def test_the_launch_refuses_before_ray_and_keeps_the_record(trained, monkeypatch):
    import launcher.backends.ray_cluster

    j, run_dir, data = trained
    recorded = (run_dir / DATA_CACHE).read_text()
    monkeypatch.setattr(launcher.backends.ray_cluster, "ray_for", lambda *_: pytest.fail("Ray was started"))
    _write_records(data, seed=2)
    with pytest.raises(DataError, match="has changed since"):
        launch(j, run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"] == _refusal(j, data)
    assert (run_dir / DATA_CACHE).read_text() == recorded
