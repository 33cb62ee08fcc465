"""Resume picks the newest intact checkpoint: a damaged or lost newest one gives way to the one before."""

import json

import pytest

from belle import checkpoint


def _saved(run_dir, step: int, shards: dict[str, bytes]) -> None:
    """A checkpoint folder as checkpoint.save leaves it: the shards, their manifest, `latest` pointing at it."""
    folder = run_dir / "checkpoints" / checkpoint.step_dir_name(step)
    (folder / "state").mkdir(parents=True)
    for name, data in shards.items():
        (folder / "state" / name).write_bytes(data)
    sizes = {f"state/{name}": len(data) for name, data in shards.items()}
    (folder / checkpoint.MANIFEST).write_text(json.dumps(sizes))
    (run_dir / "checkpoints" / checkpoint.LATEST).write_text(json.dumps({"step": step,
                                                                         "dir": checkpoint.step_dir_name(step)}))


def test_intact_newest_checkpoint_is_used(tmp_path):
    assert checkpoint.latest(tmp_path) is None
    _saved(tmp_path, 5, {"rank0.pt": b"a" * 100})
    _saved(tmp_path, 10, {"rank0.pt": b"b" * 100})
    assert checkpoint.latest(tmp_path).name == "step-000010"


@pytest.mark.parametrize("damage", ["truncated", "shard lost", "folder lost"])
def test_damaged_newest_checkpoint_gives_way_to_the_previous(tmp_path, damage):
    _saved(tmp_path, 5, {"rank0.pt": b"a" * 100, "rank1.pt": b"a" * 100})
    _saved(tmp_path, 10, {"rank0.pt": b"b" * 100, "rank1.pt": b"b" * 100})
    newest = tmp_path / "checkpoints" / "step-000010"
    if damage == "truncated":
        (newest / "state" / "rank1.pt").write_bytes(b"b" * 10)
    elif damage == "shard lost":
        (newest / "state" / "rank0.pt").unlink()
    else:
        for path in sorted(newest.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        newest.rmdir()
    skipped = []
    assert checkpoint.latest(tmp_path, on_skip=lambda folder, why: skipped.append((folder.name, why))).name == (
        "step-000005")
    why = {"truncated": "state/rank1.pt is 10 bytes, not the 100 it was written with",
           "shard lost": "state/rank0.pt is missing", "folder lost": "its folder is gone"}[damage]
    assert skipped == [("step-000010", why)]


def test_no_intact_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
    _saved(tmp_path, 5, {"rank0.pt": b"a" * 100})
    (tmp_path / "checkpoints" / "step-000005" / "state" / "rank0.pt").write_bytes(b"")
    with pytest.raises(checkpoint.CheckpointError,
                       match="no checkpoint in .* can be resumed from .*set launcher.run_dir to a new directory"):
        checkpoint.latest(tmp_path)
