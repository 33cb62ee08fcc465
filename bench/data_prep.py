"""Data preparation: BELLE's per-sample tokenisation + padded batches vs ours (batched encode + packing).

    python bench/data_prep.py [--n 100000] [--max-length 1024]

Both start from the same in-memory instruction records (generate_instruction_records) and the tiny tokenizer,
build the same samples (checked), and end with long tensors ready for the model.
  BELLE-style: what train/src/sample_generator.py + DataCollatorForSeq2Seq(pad_to_multiple_of=8) do: every
               segment encoded by its own tokenizer call, sample by sample; batches of 8 in file order padded to
               the longest sample (rounded up to a multiple of 8). Written lean, so the baseline is a fast one.
  ours:        belle.data: encode_many over chunks of 4096 records (one batched tokenizer call per chunk),
               best-fit packing into rows of exactly max_length, collate 8 rows at a time.
"""

from __future__ import annotations

import argparse
import time

from belle.data.conversation import HUMAN, to_turns
from belle.data.dataset import CHUNK_RECORDS
from belle.data.generate import generate_instruction_records
from belle.data.packing import collate, pack, padding_share
from belle.data.records import batched
from belle.data.template import ASSISTANT_PREFIX, HUMAN_PREFIX, IGNORE_INDEX, encode_many, segments, tokenize_batch
from belle.model.tokenizer import tiny_tokenizer

BATCH = 8


def belle_style(records: list[dict], tokenizer, max_length: int):
    """(samples as (input_ids, labels), padded batches of tensors, padding share) the way BELLE prepares data."""
    import torch

    samples = []
    for record in records:
        input_ids, labels = [], []
        for role, value in to_turns(record, "bench"):
            text = HUMAN_PREFIX + value + ASSISTANT_PREFIX if role == HUMAN else value
            ids = tokenizer.encode(text, add_special_tokens=False)
            input_ids += ids
            labels += [IGNORE_INDEX] * len(ids) if role == HUMAN else ids
            if role != HUMAN:
                input_ids.append(tokenizer.eos_token_id)
                labels.append(tokenizer.eos_token_id)
        samples.append((input_ids[:max_length], labels[:max_length]))
    batches, pad = [], 0
    for group in batched(samples, BATCH):
        width = -(-max(len(ids) for ids, _ in group) // 8) * 8
        pad += sum(width - len(ids) for ids, _ in group)
        batches.append(
            {
                "input_ids": torch.tensor([[tokenizer.pad_token_id] * (width - len(i)) + i for i, _ in group]),
                "labels": torch.tensor([[IGNORE_INDEX] * (width - len(lab)) + lab for _, lab in group]),
                "attention_mask": torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i, _ in group]),
            }
        )
    total = sum(b["input_ids"].numel() for b in batches)
    return samples, batches, pad / total


def ours(records: list[dict], tokenizer, max_length: int):
    """(samples, collated packed batches, padding share) through belle.data."""
    samples = []
    for chunk in batched(records, CHUNK_RECORDS):
        encoded = encode_many([to_turns(record, "bench") for record in chunk], tokenizer, max_length)
        samples += [s for s in encoded if s.n_trained]
    rows = list(pack(samples, max_length, tokenizer.pad_token_id))
    batches = [collate(group) for group in batched(rows, BATCH)]
    return samples, batches, padding_share(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="instruction samples")
    parser.add_argument("--max-length", type=int, default=1024)
    args = parser.parse_args(argv)

    tokenizer = tiny_tokenizer()
    records = generate_instruction_records(args.n, seed=1)
    tokenizer.encode("warm-up", add_special_tokens=False)
    results = {}
    for name, prepare in (("BELLE-style", belle_style), ("ours", ours)):
        start = time.perf_counter()
        samples, batches, waste = prepare(records, tokenizer, args.max_length)
        seconds = time.perf_counter() - start
        tokens = sum(b["input_ids"].numel() for b in batches)
        results[name] = (samples, seconds, len(batches), tokens, waste)

    same = [(s.input_ids, s.labels) for s in results["ours"][0]] == results["BELLE-style"][0]
    print(f"{args.n} instruction samples, max length {args.max_length}, tiny tokenizer; same samples: {same}")
    print(f"{'pipeline':<12} {'seconds':>8} {'samples/s':>10} {'batches':>8} {'tokens fed':>11} {'padding':>8}")
    for name, (samples, seconds, n_batches, tokens, waste) in results.items():
        print(f"{name:<12} {seconds:8.2f} {len(samples) / seconds:10.0f} {n_batches:8d} {tokens:11d} {waste:8.1%}")
    speedup = results["BELLE-style"][1] / results["ours"][1]
    print(f"speed-up ours / BELLE-style: {speedup:.2f}x (target >= 5x)")
    texts = [text for record in records for text, _ in segments(to_turns(record, "bench"))]
    start = time.perf_counter()
    tokenize_batch(tokenizer, texts)
    floor = time.perf_counter() - start
    ceiling = results["BELLE-style"][1] / floor
    print(
        f"floor: the Rust tokenizer alone on all {len(texts)} segments in one batched call takes {floor:.2f} s, "
        f"so no pipeline that tokenises every segment beats BELLE-style by more than {ceiling:.1f}x here"
    )
    print(f"padding: ours {results['ours'][4]:.2%} vs BELLE-style {results['BELLE-style'][4]:.2%} (target <= 2%)")


if __name__ == "__main__":
    main()
