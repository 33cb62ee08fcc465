"""Rule scorers on real BELLE school-math records and hand-made texts."""

import json
from pathlib import Path

import pytest

from belle.score.rules import (
    REFERENCE_NEEDS,
    RULES,
    chinese_ratio,
    exact_match,
    length_target,
    math_answer,
    math_final,
    rule,
    unscorable,
)

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
    assert set(RULES) == {"math_answer", "chinese_ratio", "length_target", "math_final", "exact_match"}
    assert set(REFERENCE_NEEDS) == {"math_answer", "math_final", "exact_match"}
    assert rule("chinese_ratio") is chinese_ratio
    assert rule("math_final") is math_final and rule("exact_match") is exact_match
    with pytest.raises(ValueError, match="math_answer, chinese_ratio, length_target, math_final, exact_match"):
        rule("bleu")


@pytest.mark.parametrize(
    "response, reference, expected",
    [
        ("所以每人分到9颗糖。", "36÷4=9，所以每人分到9颗糖。", 1.0),  # prose: the last numbers
        ("每人9颗", "36÷4=9，所以每人分到9颗糖。", 1.0),
        ("每人8颗", "36÷4=9，所以每人分到9颗糖。", 0.0),
        ("一共5,000个零件", "1,250×4=5,000（个）\n答案：5,000", 1.0),  # thousands commas
        ("一共5000个", "1,250×4=5,000（个）", 1.0),
        ("售价160元", "200×0.8=160，打折后卖160元", 1.0),  # units do not count
        ("结果是0.75", "3/4", 1.0),  # exact values
        ("结果是0.7500001", "3/4", 0.0),
        ("x=24 因此，长方形的宽为20厘米", "宽为24厘米", 0.0),  # the last number counts, right or wrong
        ("答案：15米，验算 15 + 1 = 16", "答案：15", 1.0),  # the first number after the last 答案
        ("先算出12，答案：15。检验无误，共2步", "15", 1.0),  # ... is preferred over later numbers
        ("答案：15", "长方形的周长是15厘米，答案：15，验算用了2次", 1.0),  # in the reference too
        ("答案：12，更正：答案：15", "15", 1.0),  # the last 答案 counts
        ("答案：12，最后是15", "15", 0.0),
        ("算得15，答案见上", "15", 1.0),  # a 答案 with no number after it: the last number
        ("答案：-5", "答案：－5", 1.0),
        ("答案：", "结果是15", 0.0),  # a response without a number
    ],
)
def test_math_final(response, reference, expected):
    assert math_final(response, reference) == expected


def test_math_final_needs_a_number_in_the_reference():
    assert unscorable("math_final", None) == 'it has no reference answer ({"text"} prompts carry none)'
    assert unscorable("math_final", "没有数字的回答") == "its reference answer '没有数字的回答' has no number"
    assert unscorable("math_final", "共9颗") is None
    with pytest.raises(ValueError, match="math_final cannot score this prompt: it has no reference answer"):
        math_final("9", None)
    with pytest.raises(ValueError, match="has no number"):
        math_final("9", "很多")


def test_math_final_scores_the_bundled_math_records(records):
    for record in records:  # BELLE's 答案：N references, as math_answer does
        answer = record["output"]
        final = int(answer.rpartition("答案：")[2])
        assert math_final(answer, answer) == 1.0
        assert math_final(f"所以是{final}个", answer) == 1.0
        assert math_final(f"所以是{final + 1}个", answer) == 0.0


@pytest.mark.parametrize(
    "response, reference, expected",
    [
        ("正面", "正面", 1.0),
        (" 正面。\n", "正面", 1.0),
        ("正面！", "正面。", 1.0),
        ("Positive.", "positive", 1.0),
        ("POSITIVE!", "Positive", 1.0),
        ("负面", "正面", 0.0),
        ("正面情感", "正面", 0.0),  # whole-label equality, not containment
        ("正面，", "正面", 0.0),  # only 。.！! are dropped
    ],
)
def test_exact_match(response, reference, expected):
    assert exact_match(response, reference) == expected


def test_exact_match_needs_a_reference_label():
    assert unscorable("exact_match", None) == 'it has no reference answer ({"text"} prompts carry none)'
    assert unscorable("exact_match", " 。") == "its reference answer is empty"
    assert unscorable("exact_match", "正面") is None
    with pytest.raises(ValueError, match="exact_match cannot score this prompt: it has no reference answer"):
        exact_match("正面", None)


def test_the_reference_checks_stay_per_rule():
    prose = "36÷4=9，所以每人分到9颗糖。"  # no 答案: math_answer cannot score it, math_final can
    assert unscorable("math_answer", prose) == f"its reference answer {prose!r} has no final 答案：N"
    assert unscorable("math_final", prose) is None
    assert unscorable("exact_match", prose) is None
    assert unscorable("chinese_ratio", None) is None
