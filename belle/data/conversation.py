"""BELLE record shapes: instruction/conversation records as (role, text) turns, and the other shapes checked."""

from __future__ import annotations

import re

from belle.data.records import DataError

HUMAN, ASSISTANT = "human", "assistant"
_ROLES = {"human": HUMAN, "assistant": ASSISTANT, "gpt": ASSISTANT}
_TURN_MARK = re.compile(r"(?:^|\n)(Human|Assistant):")  # multiturn_chat_0.8M history inside `instruction`


def record_kind(record: dict, where: str = "record") -> str:
    """One of "conversations", "instruction", "dpo", "preference", "text" from the record's keys."""
    if "conversations" in record:
        return "conversations"
    if "instruction" in record and "output" in record:
        return "instruction"
    if {"prompt", "chosen", "rejected"} <= record.keys():
        return "dpo"
    if {"chosen", "rejected"} <= record.keys():
        return "preference"
    if "text" in record:
        return "text"
    raise DataError(
        f"{where}: record matches no BELLE format (has: {', '.join(record) or 'no keys'}): expected "
        "instruction/input/output, id/conversations, text, chosen/rejected or prompt/chosen/rejected"
    )


def to_turns(record: dict, where: str) -> list[tuple[str, str]]:
    """The record as alternating (role, text) turns, human first, assistant last."""
    if "conversations" in record:
        turns = _conversation_turns(record["conversations"], where)
    elif "instruction" in record and "output" in record:
        turns = _instruction_turns(record, where)
    else:
        raise DataError(
            f"{where}: record has neither instruction/output nor conversations keys "
            f"(has: {', '.join(record) or 'no keys'}): see BELLE formats in README"
        )
    _check_alternation(turns, where)
    return turns


def validate_text(record: dict, where: str) -> str:
    """The `text` of a pretraining or PPO-prompt record."""
    return _non_empty(record, "text", where)


def validate_preference(record: dict, where: str) -> tuple[str, str]:
    """(chosen, rejected) of a reward-model record; both are full "Human: …\\n\\nAssistant: …" texts."""
    return _non_empty(record, "chosen", where), _non_empty(record, "rejected", where)


def validate_dpo(record: dict, where: str) -> tuple[str, str, str]:
    """(prompt, chosen, rejected) of a DPO record."""
    return tuple(_non_empty(record, key, where) for key in ("prompt", "chosen", "rejected"))


def _instruction_turns(record: dict, where: str) -> list[tuple[str, str]]:
    """instruction + input is the (last) human turn; history written inside `instruction` becomes turns."""
    instruction, output = _string(record, "instruction", where), _string(record, "output", where)
    extra = "" if record.get("input") is None else _string(record, "input", where)
    turns = _history_turns(instruction) or [(HUMAN, instruction)]
    role, text = turns[-1]
    turns[-1] = (role, text + extra)
    return [*turns, (ASSISTANT, output)]


def _history_turns(instruction: str) -> list[tuple[str, str]] | None:
    """Turns of "Human:…\\nAssistant:…\\nHuman:…\\nAssistant:" (the final open Assistant: dropped), else None."""
    text = instruction.strip()
    if not text.startswith("Human:"):
        return None
    parts = _TURN_MARK.split(text)  # ["", role, value, role, value, …]
    if parts[-2] != "Assistant" or parts[-1].strip():
        return None
    return [(_ROLES[role.lower()], value.strip()) for role, value in zip(parts[1:-2:2], parts[2:-2:2], strict=True)]


def _conversation_turns(conversations: object, where: str) -> list[tuple[str, str]]:
    if not isinstance(conversations, list) or not conversations:
        raise DataError(f"{where}: conversations must be a non-empty list of {{from, value}} turns: fix the record")
    turns = []
    for i, turn in enumerate(conversations, 1):
        role = turn.get("from") if isinstance(turn, dict) else None
        if not isinstance(role, str) or role.lower() not in _ROLES:
            raise DataError(f"{where}: conversations turn {i} has from={role!r}: use from=human, assistant or gpt")
        turns.append((_ROLES[role.lower()], _string(turn, "value", f"{where}: conversations turn {i}")))
    return turns


def _check_alternation(turns: list[tuple[str, str]], where: str) -> None:
    if turns[0][0] != HUMAN:
        raise DataError(f"{where}: the first turn is from {turns[0][0]}: a conversation must start with a human turn")
    for i in range(1, len(turns)):
        if turns[i][0] == turns[i - 1][0]:
            raise DataError(
                f"{where}: turns {i} and {i + 1} are both from {turns[i][0]}: human and assistant turns must alternate"
            )
    if turns[-1][0] != ASSISTANT:
        raise DataError(f"{where}: the last turn is from human and has no answer: add the reply or remove the turn")
    for i, (role, text) in enumerate(turns, 1):
        if role == ASSISTANT and not text.strip():
            raise DataError(f"{where}: turn {i} is an empty answer: write the answer or remove the record")


def _string(record: dict, key: str, where: str) -> str:
    value = record.get(key)
    if not isinstance(value, str):
        raise DataError(f"{where}: {key} must be a string, got {type(value).__name__}: fix the record or remove it")
    return value


def _non_empty(record: dict, key: str, where: str) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: {key} must be a non-empty string, got {value!r:.40}: fix the record or remove it")
    return value
