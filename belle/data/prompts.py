"""Prompt records → token ids a model continues: what PPO's rollouts (and any job that answers prompts) read.

A prompt is a ``{"text"}`` record ending with the assistant prefix, or an instruction/conversation record: every turn
but the last answer rendered in BELLE's template, that answer kept as the prompt's reference.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from belle.data.conversation import record_kind, to_turns, validate_text
from belle.data.records import DataError, iter_records
from belle.data.template import ASSISTANT_PREFIX, eos_token_id, segments, tokenize_batch


@dataclass(frozen=True)
class Prompt:
    """One prompt: its token ids (cut from the left to the job's prompt length), its text, the record's own answer
    (instruction and conversation records; None for {"text"} prompts), which rule scorers may compare with, and the
    record's file:line."""

    ids: list[int]
    text: str
    reference: str | None
    where: str


def read_prompts(path: str, tokenizer, max_prompt_length: int) -> list[Prompt]:
    """Every prompt of ``path`` (a data.path: a file, a folder or a glob), tokenized, each cut to its last
    ``max_prompt_length`` tokens. Raises DataError naming file:line for a record that is no prompt."""
    eos = eos_token_id(tokenizer)
    parsed = []  # (segments: (text, is_answer), reference, where)
    for record, where in iter_records(path):
        kind = record_kind(record, where)
        if kind == "text":
            text = validate_text(record, where)
            if not text.endswith(ASSISTANT_PREFIX):
                raise DataError(f"{where}: a prompt must end with {ASSISTANT_PREFIX!r}, where the answer starts: "
                                "fix the record (or give instruction records)")
            parsed.append(([(text, False)], None, where))
        elif kind in ("instruction", "conversations"):
            turns = to_turns(record, where)
            parsed.append((segments(turns[:-1]), turns[-1][1], where))
        else:
            raise DataError(f"{where}: a {kind} record, not a prompt: prompts are {{\"text\"}} records or instruction/"
                            "conversation records: point data.path at prompts (e.g. belle/data/samples/prompts.jsonl)")
    if not parsed:
        raise DataError(f"data.path={path} holds no prompt: point it at prompt records")
    ids = iter(tokenize_batch(tokenizer, [text for parts, _, _ in parsed for text, _ in parts]))
    prompts = []
    for parts, reference, where in parsed:
        tokens = [t for _, answer in parts for t in next(ids) + ([eos] if answer else [])]
        prompts.append(Prompt(tokens[-max_prompt_length:], "".join(text for text, _ in parts), reference, where))
    return prompts


class PromptStream:
    """Prompt indices in a global order reshuffled every epoch (keyed by seed and epoch); ``cursor`` counts the
    prompts taken since the start, so a resumed run continues at the same prompt."""

    def __init__(self, count: int, seed: int, cursor: int = 0):
        self.count, self.seed, self.cursor = count, seed, cursor

    @property
    def epoch(self) -> int:
        return self.cursor // self.count

    def take(self, n: int) -> list[int]:
        taken = []
        while len(taken) < n:
            epoch, offset = divmod(self.cursor, self.count)
            order = list(range(self.count))
            random.Random(f"prompts:{self.seed}:{epoch}").shuffle(order)
            part = order[offset:offset + n - len(taken)]
            taken += part
            self.cursor += len(part)
        return taken
