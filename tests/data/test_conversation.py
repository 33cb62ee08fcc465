"""BELLE record shapes → turns, record kinds, and the RLHF/pretraining validators."""

import pytest

from belle.data.conversation import record_kind, to_turns, validate_dpo, validate_preference, validate_text
from belle.data.records import DataError

H, A = "human", "assistant"


def test_instruction_plus_input_is_one_human_turn_plainly_concatenated():
    record = {"instruction": "把下面的词翻译成英文。\n", "input": "苹果", "output": "apple"}
    assert to_turns(record, "f:1") == [(H, "把下面的词翻译成英文。\n苹果"), (A, "apple")]


@pytest.mark.parametrize("extra", [{}, {"input": None}, {"input": ""}])
def test_missing_or_empty_input_adds_nothing(extra):
    assert to_turns({"instruction": "你好", "output": "你好！", **extra}, "f:1") == [(H, "你好"), (A, "你好！")]


def test_multiturn_history_inside_instruction_becomes_separate_turns():
    record = {
        "instruction": "Human:列出3种水果。\nAssistant:以下是3种水果：\n1. 苹果\n2. 香蕉\n3. 梨\n"
        "Human:把它们翻译成英文。\nAssistant:",
        "input": "",
        "output": "apple, banana, pear",
    }
    assert to_turns(record, "f:1") == [
        (H, "列出3种水果。"),
        (A, "以下是3种水果：\n1. 苹果\n2. 香蕉\n3. 梨"),
        (H, "把它们翻译成英文。"),
        (A, "apple, banana, pear"),
    ]


def test_input_is_appended_to_the_last_human_turn_of_a_history():
    record = {"instruction": "Human:hi\nAssistant:hello\nHuman:translate:\nAssistant:", "input": "猫", "output": "cat"}
    assert to_turns(record, "f:1") == [(H, "hi"), (A, "hello"), (H, "translate:猫"), (A, "cat")]


@pytest.mark.parametrize(
    "instruction",
    ["Human: say the word Assistant:", "Human:hi\nAssistant:hello", "Please answer as Human:\nAssistant:"],
)
def test_text_that_is_not_an_open_history_stays_one_instruction(instruction):
    assert to_turns({"instruction": instruction, "output": "ok"}, "f:1") == [(H, instruction), (A, "ok")]


def test_malformed_history_is_rejected():
    record = {"instruction": "Human:a\nHuman:b\nAssistant:", "output": "c"}
    with pytest.raises(DataError, match=r"^f:3: turns 1 and 2 are both from human: .* must alternate"):
        to_turns(record, "f:3")


def test_conversations_shape_with_gpt_role():
    record = {
        "id": "x",
        "conversations": [
            {"from": "human", "value": "你好"},
            {"from": "gpt", "value": "你好！"},
            {"from": "Human", "value": "再见"},
            {"from": "assistant", "value": "再见！"},
        ],
    }
    assert to_turns(record, "f:1") == [(H, "你好"), (A, "你好！"), (H, "再见"), (A, "再见！")]


@pytest.mark.parametrize(
    ("conversations", "message"),
    [
        ([{"from": "assistant", "value": "a"}, {"from": "human", "value": "b"}], "must start with a human turn"),
        ([{"from": "human", "value": "a"}, {"from": "human", "value": "b"}], "turns 1 and 2 are both from human"),
        ([{"from": "human", "value": "a"}], "the last turn is from human and has no answer"),
        ([{"from": "system", "value": "a"}], r"turn 1 has from='system': use from=human, assistant or gpt"),
        ([{"from": "human", "value": 3}], "conversations turn 1: value must be a string, got int"),
        ([], "conversations must be a non-empty list"),
        ("hi", "conversations must be a non-empty list"),
    ],
)
def test_bad_conversations_are_rejected_with_the_reason(conversations, message):
    with pytest.raises(DataError, match=r"^data\.jsonl:9: .*" + message):
        to_turns({"conversations": conversations}, "data.jsonl:9")


def test_record_with_neither_shape_names_its_keys():
    with pytest.raises(
        DataError,
        match=r"^data\.jsonl:4: record has neither instruction/output nor conversations keys "
        r"\(has: prompt, response\): see BELLE formats in README$",
    ):
        to_turns({"prompt": "p", "response": "r"}, "data.jsonl:4")


def test_non_string_output_is_rejected():
    with pytest.raises(DataError, match=r"f:2: output must be a string, got list"):
        to_turns({"instruction": "a", "output": ["b"]}, "f:2")


@pytest.mark.parametrize(
    ("record", "kind"),
    [
        ({"instruction": "a", "input": "", "output": "b"}, "instruction"),
        ({"id": "1", "conversations": []}, "conversations"),
        ({"text": "t"}, "text"),
        ({"chosen": "c", "rejected": "r"}, "preference"),
        ({"prompt": "p", "chosen": "c", "rejected": "r"}, "dpo"),
    ],
)
def test_record_kind(record, kind):
    assert record_kind(record) == kind


def test_unknown_record_kind_is_rejected():
    with pytest.raises(DataError, match=r"^f:1: record matches no BELLE format \(has: question\)"):
        record_kind({"question": "q"}, "f:1")


def test_validators_return_values_and_reject_empty_or_missing():
    assert validate_text({"text": "t"}, "f:1") == "t"
    assert validate_preference({"chosen": "c", "rejected": "r"}, "f:1") == ("c", "r")
    assert validate_dpo({"prompt": "p", "chosen": "c", "rejected": "r"}, "f:1") == ("p", "c", "r")
    with pytest.raises(DataError, match=r"^f:2: text must be a non-empty string"):
        validate_text({"text": "  "}, "f:2")
    with pytest.raises(DataError, match=r"^f:3: rejected must be a non-empty string, got None"):
        validate_preference({"chosen": "c"}, "f:3")
    with pytest.raises(DataError, match=r"^f:4: prompt must be a non-empty string, got 5"):
        validate_dpo({"prompt": 5, "chosen": "c", "rejected": "r"}, "f:4")
