"""A ``checkpoints/latest`` that cannot be trusted (a symlink, garbage, a folder outside the run) never sends a run
back to step 0 while an intact checkpoint exists: resume falls back to the newest intact ``step-N`` folder and says
why; with none intact it is one error naming the fix."""

import json
import os

import pytest

from belle import checkpoint

LATEST = "checkpoints/latest"


def _saved(folder, step: int, pointer: bool = True) -> None:
    """A checkpoint as checkpoint.commit leaves it under ``folder`` (a run dir): a shard, its manifest, latest."""
    step_dir = folder / "checkpoints" / checkpoint.step_dir_name(step)
    (step_dir / "state").mkdir(parents=True)
    (step_dir / "state" / "rank0.pt").write_bytes(b"x" * 64)
    (step_dir / checkpoint.MANIFEST).write_text(json.dumps({"state/rank0.pt": 64}))
    if pointer:
        (folder / LATEST).write_text(json.dumps({"step": step, "dir": step_dir.name}))


def _resumed(run_dir) -> tuple[str, list[tuple[str, str]]]:
    skipped = []
    folder = checkpoint.latest(run_dir, on_skip=lambda path, why: skipped.append((path.name, why)))
    return folder.name, skipped


@pytest.fixture
def run_dir(tmp_path):
    """A run with intact checkpoints at steps 5 and 10, and another run beside it with a newer step 20."""
    run = tmp_path / "run"
    _saved(run, 5)
    _saved(run, 10)
    _saved(tmp_path / "other", 20)
    return run


def test_a_symlinked_latest_gives_way_to_the_newest_intact_step(run_dir, tmp_path):
    pointer = run_dir / LATEST
    pointer.unlink()
    pointer.symlink_to(tmp_path / "other" / LATEST)  # a valid-looking pointer: to another run's step 20
    assert _resumed(run_dir) == ("step-000010", [("latest", "it is a symlink, not the file a save writes")])


NOT_JSON = "it is not the JSON a save writes"


@pytest.mark.parametrize(("text", "why"), [("{not json", NOT_JSON), ("", NOT_JSON), ('["step-000005"]', NOT_JSON),
                                           ('{"step": 10}', "it names None, not a step-N folder of {checkpoints}")])
def test_a_garbage_latest_gives_way_to_the_newest_intact_step(run_dir, text, why):
    (run_dir / LATEST).write_text(text)
    assert _resumed(run_dir) == ("step-000010", [("latest", why.format(checkpoints=run_dir / "checkpoints"))])


@pytest.mark.parametrize("outside", ["../../other/checkpoints/step-000020", "{other}/checkpoints/step-000020",
                                     "step-000020/../../../other/checkpoints/step-000020"])
def test_a_latest_naming_a_folder_outside_the_run_is_never_followed(run_dir, tmp_path, outside):
    named = outside.format(other=tmp_path / "other")
    (run_dir / LATEST).write_text(json.dumps({"step": 20, "dir": named}))
    assert _resumed(run_dir) == (
        "step-000010", [("latest", f"it names {named!r}, not a step-N folder of {run_dir / 'checkpoints'}")])


def test_a_step_folder_that_is_a_symlink_out_of_the_run_is_skipped(run_dir, tmp_path):
    (run_dir / "checkpoints" / "step-000030").symlink_to(tmp_path / "other" / "checkpoints" / "step-000020")
    (run_dir / LATEST).write_text(json.dumps({"step": 30, "dir": "step-000030"}))
    assert _resumed(run_dir) == ("step-000010", [("step-000030", "it is a symlink, not a folder the run saved")])


def test_a_damaged_manifest_is_a_damaged_checkpoint(run_dir):
    (run_dir / "checkpoints" / "step-000010" / checkpoint.MANIFEST).write_text("{trunc")
    assert _resumed(run_dir) == ("step-000005", [("step-000010", "its manifest.json is not the JSON a save writes")])


def test_without_latest_the_newest_intact_step_resumes_not_step_0(tmp_path):
    run = tmp_path / "run"
    _saved(run, 999_999, pointer=False)
    _saved(run, 1_000_000, pointer=False)  # after step-999999 by number, before it by name
    unfinished = run / "checkpoints" / "step-001000001"
    unfinished.mkdir()  # a save cut short: no manifest
    assert _resumed(run) == ("step-1000000", [("step-001000001", "it has no manifest (an unfinished save)")])


def test_a_first_save_cut_short_is_a_fresh_start(tmp_path):
    (tmp_path / "checkpoints" / "step-000005").mkdir(parents=True)
    assert checkpoint.latest(tmp_path) is None


def test_a_garbage_latest_with_nothing_intact_is_one_error_naming_the_fix(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    os.symlink("/etc/hostname", tmp_path / LATEST)
    with pytest.raises(checkpoint.CheckpointError) as refused:
        checkpoint.latest(tmp_path)
    assert str(refused.value) == (
        f"no checkpoint in {tmp_path / 'checkpoints'} can be resumed from (latest is a symlink, not the file a save "
        "writes): restore the damaged files, or set launcher.run_dir to a new directory to train from the start")
