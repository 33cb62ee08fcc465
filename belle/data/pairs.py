"""Preference pairs: records → (prompt, chosen, rejected) texts → token ids → rows the model reads.

Both pair formats read ``{"prompt","chosen","rejected"}`` and BELLE's ``{"chosen","rejected"}`` (full
``Human: \\n…\\n\\nAssistant: \\n…`` texts, split at the last ``\\n\\nAssistant: \\n``). Prompt and answers are
tokenised separately (no merge across the border) and every answer ends with EOS. How a pair is cut to data.max_length:

  preference (reward model)  the prompt whole, the answer cut from the right with its EOS kept last (the score is
                             read there); a pair whose prompt leaves no room for an answer token is dropped
  dpo                        stored with the prompt's last max_length - 1 tokens and the answer's first max_length;
                             cut again when read (``pair_rows``): the prompt from the left to max_prompt_length,
                             the answer from the right to max_length
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from belle.data.conversation import record_kind, validate_dpo, validate_preference
from belle.data.packing import PackedRow
from belle.data.records import DataError
from belle.data.template import ASSISTANT_PREFIX, IGNORE_INDEX, Sample, eos_token_id, tokenize_batch


def to_pair(record: dict, where: str, data_format: str) -> tuple[str, str, str]:
    """(prompt, chosen answer, rejected answer) of a pair record of ``data_format`` (preference or dpo)."""
    kind = record_kind(record, where)
    if kind == "dpo":
        prompt, chosen, rejected = validate_dpo(record, where)
    elif kind == "preference":
        prompt, chosen = _split(validate_preference(record, where)[0], "chosen", where, data_format)
        other, rejected = _split(record["rejected"], "rejected", where, data_format)
        if other != prompt:
            raise DataError(
                f"{where}: chosen and rejected answer different prompts (the texts before their last "
                f"{ASSISTANT_PREFIX!r} differ): make both texts continue the same conversation"
            )
    else:
        raise DataError(
            f"{where}: a {kind} record, not a preference pair: data.format={data_format} reads "
            '{"chosen","rejected"} or {"prompt","chosen","rejected"} records: point data.path at pairs (or use '
            "method=sft for instruction data)"
        )
    if chosen == rejected:
        raise DataError(f"{where}: chosen and rejected are the same answer: remove the pair or fix one of them")
    return prompt, chosen, rejected


def _split(text: str, key: str, where: str, data_format: str) -> tuple[str, str]:
    """(prompt up to and with the last assistant prefix, the answer after it)."""
    cut = text.rfind(ASSISTANT_PREFIX)
    if cut < 0 or not text[cut + len(ASSISTANT_PREFIX):].strip():
        raise DataError(
            f"{where}: {key} has no answer after a {ASSISTANT_PREFIX!r} to split the prompt at: data.format="
            f"{data_format} needs full \"Human: \\n…\\n\\nAssistant: \\n…\" texts, or {{\"prompt\",\"chosen\","
            "\"rejected\"}} records"
        )
    cut += len(ASSISTANT_PREFIX)
    return text[:cut], text[cut:]


def encode_pairs(
    records: Sequence[tuple[dict, str]], tokenizer, max_length: int, data_format: str
) -> list[tuple[Sample, Sample] | None]:
    """Each record as (chosen, rejected) samples, prompt masked and answer + EOS trained, cut as the module says;
    None for a dropped pair. Every text of the records is tokenised in one batched call."""
    texts = [to_pair(record, where, data_format) for record, where in records]
    ids = tokenize_batch(tokenizer, [text for triple in texts for text in triple])
    eos = eos_token_id(tokenizer)
    return [_cut(*ids[i: i + 3], eos, max_length, data_format) for i in range(0, len(ids), 3)]


def _cut(prompt: list[int], chosen: list[int], rejected: list[int], eos: int, max_length: int, data_format: str):
    if data_format == "preference":
        room = max_length - len(prompt) - 1  # answer tokens that fit before the EOS
        if room < 1:
            return None
        return tuple(_sample(prompt, [*answer[:room], eos], len(answer) > room) for answer in (chosen, rejected))
    kept = prompt[-(max_length - 1):]
    return tuple(
        _sample(kept, [*answer, eos][:max_length], len(prompt) + len(answer) + 1 > max_length)
        for answer in (chosen, rejected)
    )


def _sample(prompt: list[int], answer: list[int], truncated: bool) -> Sample:
    return Sample([*prompt, *answer], [IGNORE_INDEX] * len(prompt) + answer, truncated)


@dataclass(frozen=True, slots=True)
class Pair:
    """One pair as the cache holds it: both sequences with where their answer starts, and its index in the split."""

    index: int
    chosen: Sequence[int]
    chosen_start: int
    rejected: Sequence[int]
    rejected_start: int


def pair_rows(pairs: Sequence[Pair], pad_token_id: int, max_length: int, max_prompt_length: int | None = None
              ) -> list[PackedRow]:
    """The chosen sequences of ``pairs`` then their rejected ones, as rows padded to the longest (position ids
    restart in the pad tail, so with attention_mask=None no token attends to padding on any attention path);
    labels are the answer tokens. With ``max_prompt_length`` (DPO) the prompt is first cut from the left to it and
    the answer from the right to ``max_length``."""
    sequences = []
    for side in ("chosen", "rejected"):
        for pair in pairs:
            ids, start = list(getattr(pair, side)), getattr(pair, f"{side}_start")
            prompt, answer = ids[:start], ids[start:]
            if max_prompt_length is not None:
                prompt = prompt[-max_prompt_length:]
                answer = answer[: max_length - len(prompt)]
            sequences.append((prompt, answer))
    longest = max(len(prompt) + len(answer) for prompt, answer in sequences)
    rows = []
    for prompt, answer in sequences:
        n = len(prompt) + len(answer)
        pad = longest - n
        rows.append(PackedRow(
            [*prompt, *answer] + [pad_token_id] * pad, [IGNORE_INDEX] * len(prompt) + answer + [IGNORE_INDEX] * pad,
            [*range(n), *range(pad)], pad,
        ))
    return rows
