"""The belle-v1 judge message, byte for byte as BELLE's page builds it, and the strict score parser."""

import pytest

from belle.data.eval_set import EvalItem, category, class_key, item_id, read_eval
from belle.data.records import SAMPLES_DIR
from belle.score.belle_judge import NO_REFERENCE_CLASSES, REASK, TEMPLATE_VERSION, judge_message, parse_score

TAIL = "。请针对模型回答给出得分，顺便给出理由："


def _item(question: str, reference: str | None, cls: str) -> EvalItem:
    key = class_key(cls)
    return EvalItem(item_id(question, key), question, reference, cls, key, category(key), "test:1")


def test_the_message_with_a_reference_is_the_pages_byte_for_byte():
    item = _item("1+1等于几？", "1+1=2", "math")
    expected = "你是数学老师。 1+1等于几？ 标准回答:1+1=2  模型回答：' 等于2'" + TAIL
    assert judge_message("你是数学老师。", item, "等于2") == expected
    # the quirks spelled out: one space after the prompt, ASCII colon after 标准回答, two spaces, a full-width colon,
    # then a quote and a space before the answer
    assert expected.encode() == (
        "你是数学老师。".encode() + b" " + "1+1等于几？".encode() + b" " + "标准回答:".encode() + b"1+1=2" + b"  "
        + "模型回答：".encode() + b"' " + "等于2".encode() + b"'" + TAIL.encode())


def test_the_message_without_a_reference_is_the_pages_byte_for_byte():
    item = _item("写一首诗。", None, "generation")
    expected = "请评价。 写一首诗。  模型回答： '春风又绿江南岸'" + TAIL
    assert judge_message("请评价。", item, "春风又绿江南岸") == expected
    # two spaces before 模型回答, a full-width colon, a space, then the quote right before the answer
    assert expected.encode() == (
        "请评价。".encode() + b" " + "写一首诗。".encode() + b"  " + "模型回答：".encode() + b" '"
        + "春风又绿江南岸".encode() + b"'" + TAIL.encode())


def test_the_reference_is_included_whenever_the_item_has_one():
    head_translation = _item("翻译：你好", "Hello", "rewrite")  # HEAD relabelled translations: rewrite + reference
    assert "标准回答:Hello" in judge_message("p", head_translation, "Hi")
    # by_class reproduces BELLE's page: rewrite is judged without the reference
    assert judge_message("p", head_translation, "Hi", by_class=True) == "p 翻译：你好  模型回答： 'Hi'" + TAIL
    open_qa = _item("为什么？", None, "open qa")  # a user's item without a reference
    assert judge_message("p", open_qa, "因为") == "p 为什么？  模型回答： '因为'" + TAIL
    assert judge_message("p", open_qa, "因为", by_class=True) == "p 为什么？ 标准回答:  模型回答：' 因为'" + TAIL


def test_the_two_shapes_agree_with_the_page_on_the_stored_set_layout():
    items, prompts = read_eval(SAMPLES_DIR / "eval" / "eval_set.jsonl", SAMPLES_DIR / "eval" / "eval_prompt.jsonl")
    for item in items:  # BELLE's stored layout: "" references exactly for the no-reference classes
        message = judge_message(prompts[item.key], item, "回答")
        assert message == judge_message(prompts[item.key], item, "回答", by_class=True)
        assert ("标准回答:" in message) == (item.key not in NO_REFERENCE_CLASSES)
        assert message.startswith(prompts[item.key] + " " + item.question) and message.endswith(TAIL)


def test_constants():
    assert TEMPLATE_VERSION == "belle-v1"
    assert sorted(NO_REFERENCE_CLASSES) == ["brainstorming", "generation", "rewrite"]
    assert '"得分:"' in REASK and parse_score(REASK) is None  # the reminder itself holds no score


@pytest.mark.parametrize(
    "reply, score",
    [
        ("得分：0.7", 0.7),
        ("得分: 1", 1.0),
        ("得分:0.8分", 0.8),
        ("得分 ： 0.85\n理由：回答基本正确。", 0.85),
        ("得分:.5", 0.5),
        ("得分：0", 0.0),
        ("得分：1.0。", 1.0),
        ("理由：回答完整。\n最终得分：0.9。", 0.9),
        ("**得分：** 0.6", 0.6),  # Markdown bold
        ("**得分**：0.6", 0.6),
        ("得分：0.8\n……综上，得分：0.8分", 0.8),  # the same score repeated
        ("得分：1\n得分：1.0", 1.0),
        ("得分：0.7，而另一种看法得分：0.9", None),  # two different scores: ambiguous
        ("得分：1.5", None),  # out of range
        ("得分：-0.5", None),
        ("得分：80", None),
        ("得分：1/1", None),  # decimals only
        ("得分：0.8/1", None),
        ("这个回答很好，我给0.9分。", None),  # not in the asked form
        ("得分：满分", None),
        ("", None),
    ],
)
def test_parse_score(reply, score):
    assert parse_score(reply) == score
