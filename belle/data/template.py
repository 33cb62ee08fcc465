"""The BELLE prompt template: turns → token ids with human segments masked and every answer + EOS trained."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from belle.data.conversation import HUMAN
from belle.data.records import DataError

IGNORE_INDEX = -100
HUMAN_PREFIX, ASSISTANT_PREFIX = "Human: \n", "\n\nAssistant: \n"

Turns = Sequence[tuple[str, str]]


@dataclass(slots=True)
class Sample:
    """One training sequence; labels are -100 where nothing is trained."""

    input_ids: list[int]
    labels: list[int]
    truncated: bool = False

    @property
    def n_trained(self) -> int:
        return len(self.labels) - self.labels.count(IGNORE_INDEX)


def segments(turns: Turns) -> list[tuple[str, bool]]:
    """(text, trained) per turn: a human turn wrapped in the template (masked), an answer as is (trained)."""
    return [(HUMAN_PREFIX + text + ASSISTANT_PREFIX, False) if role == HUMAN else (text, True) for role, text in turns]


def encode(turns: Turns, tokenizer, max_length: int) -> Sample:
    """One conversation, each segment tokenised on its own: the readable reference for `encode_many`."""
    parts = segments(turns)
    ids = [tokenizer.encode(text, add_special_tokens=False) for text, _ in parts]
    return _assemble(ids, parts, eos_token_id(tokenizer), max_length)


def encode_many(conversations: Sequence[Turns], tokenizer, max_length: int) -> list[Sample]:
    """Same result as `encode` for each conversation, with all segments tokenised in one batched call."""
    parts = [segments(turns) for turns in conversations]
    ids = tokenize_batch(tokenizer, [text for sample in parts for text, _ in sample])
    eos_id, samples, start = eos_token_id(tokenizer), [], 0
    for sample in parts:
        end = start + len(sample)
        samples.append(_assemble(ids[start:end], sample, eos_id, max_length))
        start = end
    return samples


def tokenize_batch(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of many texts, no special tokens: one call into a fast tokenizer's Rust backend (a Python-only
    tokenizer, e.g. some remote-code ones, goes through its batched __call__)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=False)]


def eos_token_id(tokenizer) -> int:
    """The EOS id that ends every answer (and every pretraining text)."""
    if tokenizer.eos_token_id is None:
        raise DataError("the tokenizer has no eos_token: BELLE ends every answer with EOS; use one that has it")
    return tokenizer.eos_token_id


def pad_id(tokenizer) -> int:
    """The pad id of pair rows, of a score model's config and of PPO's generation: never the EOS, since a
    sequence-classification head scores the last token that is not padding, and that must be the answer's EOS (the
    tokenizer's pad token, else its unk token, else id 0; LLaMA's tokenizer has no pad token and BELLE pads with
    unk)."""
    eos = eos_token_id(tokenizer)
    for candidate in (tokenizer.pad_token_id, tokenizer.unk_token_id, 0, 1):
        if candidate is not None and candidate != eos:
            return candidate
    raise AssertionError("unreachable: ids 0 and 1 cannot both be the EOS")


def _assemble(segment_ids: list[list[int]], parts: list[tuple[str, bool]], eos_id: int, max_length: int) -> Sample:
    input_ids: list[int] = []
    labels: list[int] = []
    for ids, (_, is_answer) in zip(segment_ids, parts, strict=True):
        if is_answer:
            ids = [*ids, eos_id]
            labels += ids
        else:
            labels += [IGNORE_INDEX] * len(ids)
        input_ids += ids
    truncated = len(input_ids) > max_length
    return Sample(input_ids[:max_length], labels[:max_length], truncated)
