"""Resume picks the newest intact checkpoint: a damaged or lost newest one gives way to the one before; a save keeps
the newest ``keep_last`` intact ones, by step."""

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


def _commit(run_dir, step: int, keep_last: int) -> None:
    """What checkpoint.save does around the ranks' writes, for one rank."""
    folder = checkpoint.begin(run_dir, step)
    (folder / "state").mkdir()
    (folder / "state" / "rank0.pt").write_bytes(b"c" * 100)
    checkpoint.commit(run_dir, step, keep_last)


def _steps(run_dir) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").glob("step-*"))


def test_a_save_after_resuming_from_an_older_checkpoint_keeps_that_one_not_the_unfinished_newer_one(tmp_path):
    _saved(tmp_path, 10, {"rank0.pt": b"a" * 100})
    (tmp_path / "checkpoints" / "step-000015" / "state").mkdir(parents=True)  # a save killed half-way: no manifest
    assert checkpoint.latest(tmp_path).name == "step-000010"
    _commit(tmp_path, 12, keep_last=2)
    assert _steps(tmp_path) == ["step-000010", "step-000012"]
    _commit(tmp_path, 14, keep_last=1)
    assert _steps(tmp_path) == ["step-000014"] and checkpoint.latest(tmp_path).name == "step-000014"


def test_damaged_and_symlinked_step_folders_do_not_count_and_symlinks_are_left_alone(tmp_path):
    _saved(tmp_path, 5, {"rank0.pt": b"a" * 100})
    _saved(tmp_path, 8, {"rank0.pt": b"b" * 100})
    (tmp_path / "checkpoints" / "step-000008" / "state" / "rank0.pt").write_bytes(b"b")  # truncated
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "checkpoints" / "step-000009").symlink_to(elsewhere)
    _commit(tmp_path, 11, keep_last=2)
    assert _steps(tmp_path) == ["step-000005", "step-000009", "step-000011"] and elsewhere.is_dir()
    assert (tmp_path / "checkpoints" / "step-000009").is_symlink()


def test_checkpoints_are_ordered_by_step_past_six_digits(tmp_path):
    _saved(tmp_path, 999_999, {"rank0.pt": b"a" * 100})
    _commit(tmp_path, 1_000_000, keep_last=1)
    assert _steps(tmp_path) == ["step-1000000"]


def test_a_passed_over_checkpoint_is_said_in_one_line(tmp_path, capsys):
    _saved(tmp_path, 5, {"rank0.pt": b"a" * 100})
    _saved(tmp_path, 10, {"rank0.pt": b"b" * 100})
    (tmp_path / "checkpoints" / "step-000010" / "state" / "rank0.pt").unlink()
    assert checkpoint.latest(tmp_path, on_skip=checkpoint.say_skipped).name == "step-000005"
    assert capsys.readouterr().out == ("warning: checkpoint step-000010 cannot be resumed from (state/rank0.pt is "
                                       "missing): trying the one before\n")
