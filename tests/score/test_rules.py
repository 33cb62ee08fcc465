"""Rule scorers on real BELLE school-math records and hand-made texts."""

import json
from pathlib import Path

import pytest

from belle.score.rules import RULES, chinese_ratio, length_target, math_answer, rule

MATH = Path(__file__).parents[2] / "belle" / "data" / "samples" / "math.jsonl"


@pytest.fixture(scope="module")
def records():
    lines = MATH.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines[:: len(lines) // 20]]  # 20 records spread over the file


def test_math_answer_on_real_records(records):
    for record in records:
        answer = record["output"]
        assert math_answer(answer, answer) == 1.0
        final = int(answer.rpartition("答案：")[2])
        wrong = answer.rpartition("答案：")[0] + f"答案：{final + 1}"
        assert math_answer(wrong, answer) == 0.0
        # the working before the answer mentions other numbers; only the final answer counts
        working = answer.rpartition("答案：")[0]
        assert math_answer(working, answer) == 0.0
        assert math_answer(f"答案: {final}（个）", answer) == 1.0
        assert math_answer(f"答案 ： {final}", str(final)) == 1.0


@pytest.mark.parametrize(
    "response, reference, expected",
    [
        ("答案：1,200", "答案：1200", 1.0),
        ("答案：0.75", "答案：3/4", 1.0),
        ("答案：3/4", "答案：0.75", 1.0),
        ("答案：-5", "答案：－5", 1.0),
        ("答案：5", "答案：-5", 0.0),
        ("先算答案：12，再验算，最终答案：15", "答案：15", 1.0),
        ("答案：15米，也就是 16", "答案：15", 0.0),  # the last number after the last 答案 counts
        ("所以结果是15", "答案：15", 0.0),
        ("答案：", "答案：15", 0.0),
        ("答案：15", "15", 1.0),
    ],
)
def test_math_answer_formats(response, reference, expected):
    assert math_answer(response, reference) == expected


def test_math_answer_needs_a_reference_answer():
    with pytest.raises(ValueError, match="reference"):
        math_answer("答案：1", None)
    with pytest.raises(ValueError, match="no final 答案"):
        math_answer("答案：1", "一些文字")


def test_chinese_ratio():
    assert chinese_ratio("你好世界") == 1.0
    assert chinese_ratio("hello") == 0.0
    assert chinese_ratio("你好 ab\n") == pytest.approx(0.5)  # spaces do not count
    assert chinese_ratio("   ") == 0.0
    assert chinese_ratio("答案：68") == pytest.approx(2 / 5)  # punctuation and digits are not ideographs


def test_length_target():
    assert length_target("x" * 64) == 1.0
    assert length_target("x" * 32) == pytest.approx(0.5)
    assert length_target("x" * 96) == pytest.approx(0.5)
    assert length_target("x" * 200) == 0.0
    assert length_target("x" * 5, target=10) == pytest.approx(0.5)


def test_rule_registry():
    assert set(RULES) == {"math_answer", "chinese_ratio", "length_target"}
    assert rule("chinese_ratio") is chinese_ratio
    with pytest.raises(ValueError, match="math_answer, chinese_ratio, length_target"):
        rule("bleu")
