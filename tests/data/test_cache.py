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
from belle.data.dataset import build_pretrain_blocks, build_sft_samples
from belle.data.packing import pack, pad_rows
from belle.data.prepare import prepare
from belle.data.records import SAMPLES_DIR, DataError

PRETRAIN_SPEC = str(SAMPLES_DIR / "pretrain.jsonl")


def reference_rows(data: DataConfig, tokenizer):
    """What the recipe built in every worker before the cache: (eval rows, training rows)."""
    build = build_sft_samples if data.format == "sft" else build_pretrain_blocks
    samples, _ = build(data.path, tokenizer, data.max_length)
    held_out, rest = samples[: data.eval_samples], samples[data.eval_samples :]
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
    assert prepared.meta["stats"]["samples"] == sum(row.position_ids.count(0) - (row.n_pad > 0) for row in rows)
    assert prepared.meta["splits"]["train"]["rows"] == len(reference[1]) > 0

def test_in_process_and_parallel_prepare_agree(tmp_path, tokenizer, sft_spec):
    one = data_config(tmp_path / "one", sft_spec, max_length=192, eval_samples=5)
    two = replace(one, cache_dir=str(tmp_path / "two"))
    prepare(one, tokenizer, processes=1)
    prepare(two, tokenizer, processes=2)
    assert [list(r) for r in open_cache(one, tokenizer)] == [list(r) for r in open_cache(two, tokenizer)]
