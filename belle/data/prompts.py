"""Prompt records → token ids a model continues: what PPO's rollouts (and any job that answers prompts) read.

A prompt is a ``{"text"}`` record ending with the assistant prefix, or an instruction/conversation record: every turn
but the last answer rendered in BELLE's template, that answer kept as the prompt's reference.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from belle.data.conversation import HUMAN, record_kind, to_turns, validate_text
from belle.data.records import DataError, iter_records
from belle.data.template import ASSISTANT_PREFIX, eos_token_id, segments, tokenize_batch


@dataclass(frozen=True)
class Prompt:
    """One prompt: its token ids (cut from the left to the job's prompt length), its text as the model reads it (EOS
    after each earlier answer, uncut), the record's own answer
    (instruction and conversation records; None for {"text"} prompts), which rule scorers may compare with, the
    record's file:line, its id (``prompt_ids``) and how many tokens the cut removed."""

    ids: list[int]
    text: str
    reference: str | None
    where: str
    id: str = ""
    cut: int = 0


def read_prompts(path: str, tokenizer, max_prompt_length: int) -> list[Prompt]:
    """Every prompt of ``path`` (a data.path: a file, a folder or a glob), tokenized, each cut to its last
    ``max_prompt_length`` tokens. Raises DataError naming file:line for a record that is no prompt."""
    parsed = []  # (segments: (text, is_answer), reference, where)
    given = []  # each record's own "id", or None
    for record, where in iter_records(path):
        given.append(record.get("id"))
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
    return render(parsed, prompt_ids(parsed, given), tokenizer, max_prompt_length)


def question_prompts(questions: list[tuple[str, str, str | None, str]], tokenizer, max_prompt_length: int
                     ) -> list[Prompt]:
    """Prompts of (id, question, reference, where) items (an eval set's): the question as one human turn in BELLE's
    template, answered after the assistant prefix, as training renders the same turn."""
    parsed = [(segments([(HUMAN, question)]), reference, where) for _, question, reference, where in questions]
    return render(parsed, [name for name, *_ in questions], tokenizer, max_prompt_length)


def render(parsed: list, names: list[str], tokenizer, max_prompt_length: int) -> list[Prompt]:
    """Prompts of parsed records ((text, is_answer) segments, reference, where) with their ids: every segment
    tokenized on its own (in one batch), an EOS after each answer, cut to the last ``max_prompt_length`` tokens."""
    eos = eos_token_id(tokenizer)
    ids = iter(tokenize_batch(tokenizer, [text for parts, _, _ in parsed for text, _ in parts]))
    prompts = []
    for (parts, reference, where), name in zip(parsed, names, strict=True):
        tokens = [t for _, answer in parts for t in next(ids) + ([eos] if answer else [])]
        text = "".join(text + (tokenizer.eos_token if answer else "") for text, answer in parts)
        cut = max(0, len(tokens) - max_prompt_length)
        prompts.append(Prompt(tokens[cut:], text, reference, where, name, cut))
    return prompts


def prompt_ids(parsed: list, given: list) -> list[str]:
    """Each prompt's id: the record's own "id" where it has one (unique, else DataError naming both places), else
    the first 12 hex digits of the SHA-256 of its rendered text and reference, with -2, -3… on repeats, so an id
    stays the same when other records are added, removed or reordered."""
    ids, seen = [], {}
    for (parts, reference, where), own in zip(parsed, given, strict=True):
        if own is not None:
            name = str(own)
            if name in seen:
                raise DataError(f"{where}: id {name!r} is also the id of {seen[name]}: give every record its own id")
        else:
            text = "".join(text for text, _ in parts) + "\x00" + (reference or "")
            name = base = hashlib.sha256(text.encode()).hexdigest()[:12]
            repeat = 1
            while name in seen:
                repeat += 1
                name = f"{base}-{repeat}"
        seen[name] = where
        ids.append(name)
    return ids


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
