"""Read a data spec into encoded samples (SFT), blocks (pretraining) or pairs (RM, DPO), streaming in chunks, with
counts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice

from belle.config.data import PAIR_FORMATS
from belle.data.conversation import to_turns, validate_text
from belle.data.pairs import encode_pairs
from belle.data.pretrain import pretrain_blocks
from belle.data.records import DataError, batched, iter_records
from belle.data.template import Sample, encode_many

CHUNK_RECORDS = 4096


@dataclass
class DatasetStats:
    """What building a dataset read, kept and dropped."""

    records: int = 0  # records read
    samples: int = 0  # samples (or pretraining blocks) kept
    dropped_no_trained_tokens: int = 0  # samples (pairs) whose answers were all cut off by truncation
    truncated: int = 0  # samples cut at max_length, dropped ones included
    tokens: int = 0  # tokens in the kept samples
    trained_tokens: int = 0  # tokens with a label in the kept samples
    eval_copies: int = 0  # training samples dropped as copies of a held-out eval sample (prepared cache only)


def build_sft_samples(
    spec: str, tokenizer, max_length: int, limit: int | None = None
) -> tuple[list[Sample], DatasetStats]:
    """Instruction/conversation records of `spec` (the first `limit`) as BELLE-template samples."""
    stats, kept = DatasetStats(), []
    for chunk in batched(islice(iter_records(spec), limit), CHUNK_RECORDS):
        stats.records += len(chunk)
        for sample in encode_many([to_turns(record, where) for record, where in chunk], tokenizer, max_length):
            stats.truncated += sample.truncated
            trained = sample.n_trained
            if not trained:
                stats.dropped_no_trained_tokens += 1
                continue
            stats.tokens += len(sample.input_ids)
            stats.trained_tokens += trained
            kept.append(sample)
    stats.samples = len(kept)
    check_records(spec, stats)
    check_kept(spec, stats, max_length)
    return kept, stats


def build_pretrain_blocks(
    spec: str, tokenizer, max_length: int, limit: int | None = None
) -> tuple[list[Sample], DatasetStats]:
    """`{"text"}` records of `spec` (the first `limit`) as full max_length blocks."""
    stats = DatasetStats()

    def texts() -> Iterator[str]:
        for record, where in islice(iter_records(spec), limit):
            stats.records += 1
            yield validate_text(record, where)

    blocks = list(pretrain_blocks(texts(), tokenizer, max_length, CHUNK_RECORDS))
    stats.samples = len(blocks)
    stats.tokens = stats.trained_tokens = len(blocks) * max_length
    check_records(spec, stats)
    check_blocks(spec, stats, max_length)
    return blocks, stats


def build_pairs(
    spec: str, tokenizer, max_length: int, data_format: str, limit: int | None = None
) -> tuple[list[tuple[Sample, Sample]], DatasetStats]:
    """Pair records of `spec` (the first `limit`) as (chosen, rejected) samples, cut as belle.data.pairs says;
    stats count pairs."""
    stats, kept = DatasetStats(), []
    for chunk in batched(islice(iter_records(spec), limit), CHUNK_RECORDS):
        stats.records += len(chunk)
        for pair in encode_pairs(chunk, tokenizer, max_length, data_format):
            if pair is None:
                stats.dropped_no_trained_tokens += 1
                continue
            stats.truncated += any(sample.truncated for sample in pair)
            stats.tokens += sum(len(sample.input_ids) for sample in pair)
            stats.trained_tokens += sum(sample.n_trained for sample in pair)
            kept.append(pair)
    stats.samples = len(kept)
    check_records(spec, stats)
    check_kept(spec, stats, max_length)
    return kept, stats


def builder(data_format: str):
    """The in-memory builder of data.format, called as (spec, tokenizer, max_length, limit=…): build_sft_samples
    (sft), build_pretrain_blocks (pretrain) or build_pairs (preference, dpo). PPO's prompts (data.format=prompt)
    train no tokens of their own: belle.data.prompts reads them."""
    if data_format in PAIR_FORMATS:
        return lambda spec, tokenizer, max_length, limit=None: build_pairs(
            spec, tokenizer, max_length, data_format, limit
        )
    builders = {"sft": build_sft_samples, "pretrain": build_pretrain_blocks}
    if data_format not in builders:
        raise ValueError(f"data.format={data_format} has no training samples to build: prompts are read by "
                         "belle.data.prompts.read_prompts")
    return builders[data_format]


def check_records(spec: str, stats: DatasetStats) -> None:
    """Refuse data without records."""
    if not stats.records:
        raise DataError(f"{spec}: no records: point data.path at a non-empty BELLE file")


def check_kept(spec: str, stats: DatasetStats, max_length: int) -> None:
    """Refuse SFT or pair data of which truncation left no sample (pair) with an answer token."""
    if not stats.samples:
        raise DataError(
            f"{spec}: all {stats.dropped_no_trained_tokens} samples have no answer token left after truncation: "
            f"raise data.max_length=… (now {max_length}) or drop over-long prompts"
        )


def check_blocks(spec: str, stats: DatasetStats, max_length: int) -> None:
    """Refuse pretraining data too short for one block."""
    if not stats.samples:
        raise DataError(
            f"{spec}: {stats.records} texts hold fewer than {max_length} tokens, not one full block: "
            f"lower data.max_length=… (now {max_length}) or add text"
        )
