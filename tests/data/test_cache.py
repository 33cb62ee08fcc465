"""The prepared cache: the same rows as the in-memory path, keyed by everything that changes them, built once."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from belle.config import DataConfig
from belle.data.cache import cache_path, is_complete, open_cache
from belle.data.dataset import builder
from belle.data.packing import pack, pad_rows
from belle.data.prepare import prepare
from belle.data.records import SAMPLES_DIR, DataError

PRETRAIN_SPEC = str(SAMPLES_DIR / "pretrain.jsonl")


def reference_rows(data: DataConfig, tokenizer):
    """What the recipe built in every worker before the cache: (eval rows, training rows)."""
    samples, _ = builder(data.format)(data.path, tokenizer, data.max_length)
    held_out, rest = samples[: data.eval_samples], samples[data.eval_samples :]
    rest = [s for s in rest if s.input_ids not in [h.input_ids for h in held_out]]  # eval samples are never trained
    rows = pack if data.pack else pad_rows
    return [list(rows(part, data.max_length, tokenizer.pad_token_id)) for part in (held_out, rest)]


def data_config(tmp_path, path, **overrides) -> DataConfig:
    return DataConfig(name="test", path=path, cache_dir=str(tmp_path / "cache"), **overrides)


@pytest.mark.parametrize(
    ("fmt", "max_length", "pack_rows", "eval_samples"),
    [("sft", 256, True, 64), ("sft", 128, False, 10), ("pretrain", 128, True, 3), ("pretrain", 64, False, 0)],
)
def test_cache_holds_exactly_the_reference_rows(tmp_path, tokenizer, sft_spec, fmt, max_length, pack_rows,
                                                eval_samples):
    spec = sft_spec if fmt == "sft" else PRETRAIN_SPEC
    data = data_config(tmp_path, spec, format=fmt, max_length=max_length, pack=pack_rows, eval_samples=eval_samples)
    prepared = prepare(data, tokenizer, processes=2)
    assert prepared.built
    reference = reference_rows(data, tokenizer)
    for cached, expected in zip(open_cache(data, tokenizer), reference, strict=True):
        assert len(cached) == len(expected)
        assert list(cached) == expected  # ids, labels, position ids (the sample boundaries) and padding, in order
    rows = [row for part in reference for row in part]
    stats = prepared.meta["stats"]
    assert stats["samples"] - stats["eval_copies"] == sum(row.position_ids.count(0) - (row.n_pad > 0) for row in rows)
    assert prepared.meta["splits"]["train"]["rows"] == len(reference[1]) > 0

def test_the_eval_samples_are_held_out_from_training(tmp_path, tokenizer, sft_spec):
    """The bundled data repeats records (2,980 distinct among 4,200): no eval sample may also be trained."""
    data = data_config(tmp_path, sft_spec, max_length=256, eval_samples=64)
    assert prepare(data, tokenizer, processes=1).meta["stats"]["eval_copies"] > 0
    eval_rows, train_rows = open_cache(data, tokenizer)

    def samples(rows):
        for row in rows:
            starts = [i for i, p in enumerate(row.position_ids) if p == 0] + [len(row.input_ids) - row.n_pad]
            yield from (tuple(row.input_ids[a:b]) for a, b in zip(starts, starts[1:], strict=False) if a < b)

    held_out = set(samples(eval_rows))
    assert len(held_out) > 30 and not held_out & set(samples(train_rows))


def test_in_process_and_parallel_prepare_agree(tmp_path, tokenizer, sft_spec):
    one = data_config(tmp_path / "one", sft_spec, max_length=192, eval_samples=5)
    two = replace(one, cache_dir=str(tmp_path / "two"))
    prepare(one, tokenizer, processes=1)
    prepare(two, tokenizer, processes=2)
    assert [list(r) for r in open_cache(one, tokenizer)] == [list(r) for r in open_cache(two, tokenizer)]


def test_a_matching_cache_is_reused_and_every_input_makes_a_new_one(tmp_path, tokenizer, char_tokenizer, sft_spec):
    data = data_config(tmp_path, sft_spec, max_length=128)
    first = prepare(data, tokenizer, processes=1)
    assert first.built and not prepare(data, tokenizer, processes=1).built  # no tokenizing the second time
    assert cache_path(replace(data, pack=False), tokenizer) != first.folder
    assert cache_path(replace(data, eval_samples=4), tokenizer) != first.folder
    assert cache_path(data, char_tokenizer) != first.folder
    assert prepare(replace(data, max_length=96), tokenizer, processes=1).built

    copy = tmp_path / "data.jsonl"
    copy.write_bytes((SAMPLES_DIR / "instruction.jsonl").read_bytes())
    own = data_config(tmp_path, str(copy), max_length=128)
    before = prepare(own, tokenizer, processes=1).folder
    with copy.open("a") as f:
        f.write(json.dumps({"instruction": "再说一遍", "output": "好的"}, ensure_ascii=False) + "\n")
    after = prepare(own, tokenizer, processes=1)
    assert after.built and after.folder != before and after.meta["stats"]["records"] == 3001


def test_parquet_gives_the_rows_of_the_same_records_as_json_lines(tmp_path, tokenizer):
    import pyarrow as pa
    import pyarrow.parquet as pq

    for name in ("instruction", "conversations"):
        records = [json.loads(line) for line in (SAMPLES_DIR / f"{name}.jsonl").read_text().splitlines()]
        pq.write_table(pa.Table.from_pylist(records), tmp_path / f"{name}.parquet")
    parquet = data_config(tmp_path, f"{tmp_path}/instruction.parquet,{tmp_path}/conversations.parquet", eval_samples=8)
    jsonl = replace(parquet, path=f"{SAMPLES_DIR}/instruction.jsonl,{SAMPLES_DIR}/conversations.jsonl")
    prepare(parquet, tokenizer, processes=2)
    prepare(jsonl, tokenizer, processes=2)
    assert [list(r) for r in open_cache(parquet, tokenizer)] == [list(r) for r in open_cache(jsonl, tokenizer)]


def test_a_missing_cache_names_data_cache_dir(tmp_path, tokenizer, sft_spec):
    with pytest.raises(DataError, match=r"^no prepared data at .* on this node: set data\.cache_dir=…"):
        open_cache(data_config(tmp_path, sft_spec), tokenizer)


def test_workers_read_the_cache_the_launcher_recorded_without_seeing_the_data(tmp_path, tokenizer):
    import shutil

    from belle.rundir import DATA_CACHE

    spec = tmp_path / "data.jsonl"  # a copy: this test removes it
    shutil.copy(SAMPLES_DIR / "instruction.jsonl", spec)
    data = data_config(tmp_path, str(spec))
    prepared = prepare(data, tokenizer, processes=1)
    expected = [list(rows) for rows in open_cache(data, tokenizer)]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / DATA_CACHE).write_text(json.dumps({"folder": str(prepared.folder)}))
    spec.unlink()  # this node cannot see the data file
    assert [list(rows) for rows in open_cache(data, tokenizer, run_dir)] == expected
    shutil.rmtree(prepared.folder)  # nor the cache: the error names the key that fixes it
    with pytest.raises(DataError, match=r"on this node: set data\.cache_dir=…"):
        open_cache(data, tokenizer, run_dir)


def _large_file(path, n: int, last: str | None = None) -> str:
    from belle.data.generate import generate_instruction_records

    lines = [json.dumps(r, ensure_ascii=False) for r in generate_instruction_records(n)]
    path.write_text("\n".join(lines + ([last] if last else [])) + "\n", encoding="utf-8")
    return str(path)


def test_a_bad_record_at_the_last_line_stops_prepare_and_leaves_nothing(tmp_path, tokenizer):
    spec = _large_file(tmp_path / "big.jsonl", 20_000, last='{"instruction": "问", "output": ""}')
    data = data_config(tmp_path, spec)
    with pytest.raises(DataError, match=r"big\.jsonl:20001: turn 2 is an empty answer: write the answer or remove"):
        prepare(data, tokenizer, processes=2)
    assert not is_complete(cache_path(data, tokenizer))
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []


PREPARE = """
import sys
from belle.config import DataConfig
from belle.data.prepare import prepare
from belle.model.tokenizer import tiny_tokenizer
data = DataConfig(name="t", path=sys.argv[1], cache_dir=sys.argv[2])
print("built" if prepare(data, tiny_tokenizer(), processes=2).built else "reused", flush=True)
"""


def _prepare_in_subprocess(spec: str, cache_dir, before: str = "") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", before + PREPARE, spec, str(cache_dir)], stdout=subprocess.PIPE,
                            text=True, start_new_session=True)


def test_prepare_under_the_launchers_stop_handler_neither_triggers_it_nor_hangs(tmp_path, sft_spec):
    """The launcher prepares inside graceful_stop, whose SIGTERM handler only asks a run to stop: the worker
    processes must not inherit it (the pool ends them with SIGTERM)."""
    handler = (f"import signal\nsignal.signal(signal.SIGTERM, lambda *_: open({str(tmp_path / 'asked')!r}, 'w'))\n")
    job = _prepare_in_subprocess(sft_spec, tmp_path / "cache", before=handler)
    assert job.communicate(timeout=120)[0].strip() == "built" and job.returncode == 0
    assert not (tmp_path / "asked").exists()


def _wait_for(condition, what: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_prepare_killed_half_way_leaves_no_cache_and_the_next_one_rebuilds(tmp_path, tokenizer):
    spec = _large_file(tmp_path / "big.jsonl", 40_000)
    cache = tmp_path / "cache"
    process = _prepare_in_subprocess(spec, cache)
    staged = lambda: [f for f in cache.glob(".*/train.tokens") if f.stat().st_size]  # noqa: E731
    _wait_for(staged, "the first rows written")
    os.killpg(process.pid, signal.SIGKILL)  # the preparing process and its worker processes
    process.wait()
    data = data_config(tmp_path, spec)
    assert not is_complete(cache_path(data, tokenizer))
    again = prepare(data, tokenizer, processes=2)
    assert again.built and again.meta["stats"]["samples"] == 40_000
    assert not [p for p in cache.glob(".*") if p.is_dir()], "the killed build's staging folder is gone"


def _waiters(lock) -> int:
    """Processes blocked on the flock of ``lock`` (the `->` lines of /proc/locks)."""
    inode = f":{os.stat(lock).st_ino} "
    return sum("->" in line and inode in line for line in open("/proc/locks"))


def test_two_jobs_preparing_the_same_data_at_once_tokenize_it_once(tmp_path, tokenizer, sft_spec):
    import fcntl

    cache = tmp_path / "cache"
    data = data_config(tmp_path, sft_spec)
    folder = cache_path(data, tokenizer)
    cache.mkdir()
    with open(cache / f".{folder.name}.lock", "w") as held:  # both start while a third holds the key's lock
        fcntl.flock(held, fcntl.LOCK_EX)
        jobs = [_prepare_in_subprocess(sft_spec, cache) for _ in range(2)]
        _wait_for(lambda: _waiters(held.name) == 2, "both jobs waiting for the lock")
    outputs = sorted(job.communicate(timeout=120)[0].strip() for job in jobs)
    assert outputs == ["built", "reused"]
    assert all(job.returncode == 0 for job in jobs) and is_complete(folder)


def test_a_relative_cache_dir_is_refused(tokenizer, sft_spec):
    data = DataConfig(name="test", path=sft_spec, cache_dir="cache")
    with pytest.raises(DataError, match=r"^data\.cache_dir=cache is a relative path: set data\.cache_dir=<absolute"):
        prepare(data, tokenizer)


def test_each_split_has_the_digest_of_its_rows(tmp_path, tokenizer, sft_spec):
    """A resume compares these (belle.train.prepare.check_same_data): equal for the same rows however prepared, unequal
    for other rows."""
    one = data_config(tmp_path / "one", sft_spec, max_length=192, eval_samples=5)
    digests = [{split: counts["sha256"] for split, counts in prepare(data, tokenizer, processes=n).meta["splits"]
                .items()} for data, n in ((one, 1), (replace(one, cache_dir=str(tmp_path / "two")), 2))]
    assert digests[0] == digests[1] and len(digests[0]["train"]) == 64
    other = prepare(replace(one, eval_samples=6), tokenizer, processes=1).meta["splits"]
    assert other["train"]["sha256"] != digests[0]["train"] and other["eval"]["sha256"] != digests[0]["eval"]
