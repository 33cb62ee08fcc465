"""A prepared cache with a file missing or cut short is never reused: the launcher's prepare rebuilds it (one line
saying why), a worker's open_cache refuses it in one line naming the folder."""

import json

import pytest

from belle.config import DataConfig
from belle.data.cache import damage, is_complete, open_cache
from belle.data.generate import generate_instruction_records
from belle.data.prepare import prepare
from belle.data.records import DataError


@pytest.fixture
def data(tmp_path) -> DataConfig:
    """200 generated instruction records, their cache under tmp_path."""
    path = tmp_path / "small.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in generate_instruction_records(200)),
                    encoding="utf-8")
    return DataConfig(name="test", path=str(path), cache_dir=str(tmp_path / "cache"), max_length=128,
                      eval_samples=8)


def _truncate(path, size):
    with open(path, "r+b") as f:
        f.truncate(size)


def _grow(path):
    with open(path, "ab") as f:
        f.write(b"\0" * 8)


DAMAGES = {
    "train.tokens cut short": (lambda folder: _truncate(folder / "train.tokens", 10), "train.tokens is 10 bytes, not"),
    "eval.rows removed": (lambda folder: (folder / "eval.rows").unlink(), "eval.rows is missing"),
    "train.samples grown": (lambda folder: _grow(folder / "train.samples"), "train.samples is"),
    "meta.json cut short": (lambda folder: _truncate(folder / "meta.json", 30), "its meta.json is unreadable"),
}


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_cache_is_rebuilt_by_the_next_prepare(data, tokenizer, capsys, how):
    first = prepare(data, tokenizer, processes=1)
    rows = [list(split) for split in open_cache(data, tokenizer)]
    spoil, why = DAMAGES[how]
    spoil(first.folder)
    assert not is_complete(first.folder) and damage(first.folder).startswith(why)
    capsys.readouterr()

    again = prepare(data, tokenizer, processes=1)
    assert again.built and again.folder == first.folder
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(f"data cache {first.folder} is damaged ({why}") and line.endswith("): rebuilding it")
    assert damage(again.folder) is None
    assert [list(split) for split in open_cache(data, tokenizer)] == rows
    assert sorted(p.name for p in first.folder.parent.iterdir()) == sorted(
        [first.folder.name, f".{first.folder.name}.lock"])  # no staging or previous folder left


@pytest.mark.parametrize("how", DAMAGES)
def test_a_worker_refuses_a_damaged_cache_in_one_line(data, tokenizer, how):
    folder = prepare(data, tokenizer, processes=1).folder
    spoil, why = DAMAGES[how]
    spoil(folder)
    with pytest.raises(DataError) as refused:
        open_cache(data, tokenizer)
    message = str(refused.value)
    assert message.startswith(f"the prepared data at {folder} is damaged ({why}")
    assert message.endswith(f"every node sees whole (now {data.cache_dir})") and "\n" not in message


def test_a_whole_cache_is_reused(data, tokenizer, capsys):
    prepare(data, tokenizer, processes=1)
    capsys.readouterr()
    assert not prepare(data, tokenizer, processes=1).built and capsys.readouterr().out == ""
