"""Pretraining data: texts + EOS, concatenated and cut into full max_length blocks (labels = input ids)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from belle.data.records import batched
from belle.data.template import Sample, eos_token_id, tokenize_batch


def pretrain_blocks(texts: Iterable[str], tokenizer, max_length: int, chunk_size: int = 4096) -> Iterator[Sample]:
    """Blocks of exactly max_length tokens across text borders; the final partial block is dropped."""
    eos = eos_token_id(tokenizer)
    stream: list[int] = []
    for chunk in batched(texts, chunk_size):
        for ids in tokenize_batch(tokenizer, chunk):
            stream += ids
            stream.append(eos)
        full = len(stream) - len(stream) % max_length
        for start in range(0, full, max_length):
            block = stream[start : start + max_length]
            yield Sample(block, list(block))
        del stream[:full]
