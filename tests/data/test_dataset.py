"""Building SFT samples and pretraining blocks from a data spec: counts, limits, streaming, and the errors."""

import json

import pytest

from belle.data import dataset
from belle.data.dataset import build_pretrain_blocks, build_sft_samples
from belle.data.records import SAMPLES_DIR, DataError


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return str(path)


def test_bundled_sft_data_builds_with_consistent_stats(tokenizer, sft_spec):
    samples, stats = build_sft_samples(sft_spec, tokenizer, 1024)
    assert stats.records == stats.samples == len(samples) == 4200
    assert stats.dropped_no_trained_tokens == stats.truncated == 0
    assert stats.tokens == sum(len(s.input_ids) for s in samples)
    assert 0 < stats.trained_tokens == sum(s.n_trained for s in samples) < stats.tokens


def test_limit_reads_only_the_first_records_in_chunks(tokenizer, sft_spec, monkeypatch):
    monkeypatch.setattr(dataset, "CHUNK_RECORDS", 7)
    first, _ = build_sft_samples(sft_spec, tokenizer, 1024, limit=20)
    all_samples, _ = build_sft_samples(sft_spec, tokenizer, 1024)
    assert first == all_samples[:20]


def test_over_long_prompts_are_dropped_and_counted(tokenizer, tmp_path):
    spec = write_jsonl(
        tmp_path / "d.jsonl",
        [{"instruction": "短问题", "input": "", "output": "短答案"}, {"instruction": "长" * 400, "output": "答"}],
    )
    samples, stats = build_sft_samples(spec, tokenizer, 64)
    assert (stats.records, stats.samples, stats.dropped_no_trained_tokens, stats.truncated) == (2, 1, 1, 1)
    assert len(samples) == 1 and samples[0].n_trained > 0


def test_all_samples_truncated_to_nothing_says_raise_max_length(tokenizer, tmp_path):
    spec = write_jsonl(tmp_path / "d.jsonl", [{"instruction": "长" * 400, "output": "答"}] * 3)
    with pytest.raises(DataError, match=r"all 3 samples .*raise data\.max_length=… \(now 16\) or drop over-long"):
        build_sft_samples(spec, tokenizer, 16)


@pytest.mark.parametrize("build", [build_sft_samples, build_pretrain_blocks])
def test_empty_dataset_is_an_error(tokenizer, tmp_path, build):
    spec = str(tmp_path / "empty.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match=r"empty\.jsonl: no records: point data\.path at a non-empty BELLE file"):
        build(spec, tokenizer, 64)


def test_wrong_shape_record_in_sft_data_names_file_and_line(tokenizer, tmp_path):
    spec = write_jsonl(tmp_path / "d.jsonl", [{"instruction": "a", "output": "b"}, {"text": "pretraining"}])
    with pytest.raises(DataError, match=r"d\.jsonl:2: record has neither instruction/output nor conversations"):
        build_sft_samples(spec, tokenizer, 64)


def test_missing_file_is_an_error(tokenizer):
    with pytest.raises(DataError, match=r"no_such\.jsonl: no such data file .*set data\.path=…"):
        build_sft_samples("no_such.jsonl", tokenizer, 64)


def test_pretrain_blocks_concatenate_texts_with_eos_and_drop_the_tail(tokenizer, tmp_path):
    texts = ["北京是中国的首都。", "The capital of France is Paris.", "熊猫生活在中国。"] * 5
    spec = write_jsonl(tmp_path / "p.jsonl", [{"text": t} for t in texts])
    stream = [i for t in texts for i in [*tokenizer.encode(t, add_special_tokens=False), tokenizer.eos_token_id]]
    blocks, stats = build_pretrain_blocks(spec, tokenizer, 16)
    assert stats.records == 15 and stats.samples == len(blocks) == len(stream) // 16
    assert [i for b in blocks for i in b.input_ids] == stream[: len(blocks) * 16]
    assert all(b.labels == b.input_ids and len(b.input_ids) == 16 for b in blocks)


def test_pretrain_blocks_stream_across_chunks_the_same(tokenizer, monkeypatch):
    spec = str(SAMPLES_DIR / "pretrain.jsonl")
    whole, _ = build_pretrain_blocks(spec, tokenizer, 100)
    monkeypatch.setattr(dataset, "CHUNK_RECORDS", 3)
    assert build_pretrain_blocks(spec, tokenizer, 100)[0] == whole


def test_too_little_pretraining_text_for_one_block(tokenizer, tmp_path):
    spec = write_jsonl(tmp_path / "p.jsonl", [{"text": "短"}])
    with pytest.raises(DataError, match=r"1 texts hold fewer than 512 tokens.*lower data\.max_length=… \(now 512\)"):
        build_pretrain_blocks(spec, tokenizer, 512)


def test_empty_pretraining_text_is_rejected(tokenizer, tmp_path):
    spec = write_jsonl(tmp_path / "p.jsonl", [{"text": "ok"}, {"text": ""}])
    with pytest.raises(DataError, match=r"p\.jsonl:2: text must be a non-empty string"):
        build_pretrain_blocks(spec, tokenizer, 4)
