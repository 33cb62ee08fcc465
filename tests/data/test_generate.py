"""The sample-data generator: deterministic, the bundled files up to date, right shapes, correct math."""

import json
import re

import pytest

from belle.data.conversation import record_kind, to_turns, validate_dpo, validate_preference, validate_text
from belle.data.generate import generate_instruction_records, main
from belle.data.records import SAMPLES_DIR, iter_records

KINDS = {
    "instruction.jsonl": "instruction",
    "conversations.jsonl": "conversations",
    "math.jsonl": "instruction",
    "pretrain.jsonl": "text",
    "preference.jsonl": "preference",
    "dpo.jsonl": "dpo",
    "prompts.jsonl": "text",
}
EQUATION = re.compile(r"^(\d+(?: [-+×÷] \d+)+) = (\d+)", re.MULTILINE)


def read(name):
    return [record for record, _ in iter_records(str(SAMPLES_DIR / name))]


def test_two_runs_are_byte_identical_and_match_the_bundled_files(tmp_path):
    main(["--out", str(tmp_path / "a")])
    main(["--out", str(tmp_path / "b")])
    for name in KINDS:
        first = (tmp_path / "a" / name).read_bytes()
        assert first == (tmp_path / "b" / name).read_bytes()
        assert first == (SAMPLES_DIR / name).read_bytes(), f"regenerate: python -m belle.data.generate ({name})"


def test_bundled_files_are_small_and_every_record_has_its_shape():
    assert sorted(p.name for p in SAMPLES_DIR.glob("*.jsonl")) == sorted(KINDS)
    assert sum(p.stat().st_size for p in SAMPLES_DIR.glob("*.jsonl")) < 3_000_000
    for name, kind in KINDS.items():
        for record, where in iter_records(str(SAMPLES_DIR / name)):
            assert record_kind(record, where) == kind
            {
                "instruction": to_turns,
                "conversations": to_turns,
                "text": validate_text,
                "preference": validate_preference,
                "dpo": validate_dpo,
            }[kind](record, where)


def test_instruction_file_mixes_languages_inputs_and_multiturn_histories():
    records = read("instruction.jsonl")
    assert len(records) == 3000
    multiturn = [r for r in records if r["instruction"].startswith("Human:")]
    assert 400 < len(multiturn) < 800
    assert all(len(to_turns(r, "x")) >= 4 for r in multiturn)
    assert sum(bool(r["input"]) for r in records) > 500
    chinese = sum(bool(re.search(r"[\u4e00-\u9fff]", r["instruction"])) for r in records)
    assert 1000 < chinese < 2900
    assert len({r["instruction"] + r["input"] for r in records}) > 1200  # varied, not a handful of repeats


def test_math_answers_are_correct():
    records = read("math.jsonl")
    assert len(records) == 600
    for r in records:
        assert r["instruction"].startswith("题目：")
        equations = EQUATION.findall(r["output"])
        assert equations, r["output"]
        for expression, result in equations:
            value = eval(expression.replace("×", "*").replace("÷", "//"))  # digits and operators only
            assert value == int(result), r
            if "÷" in expression:
                a, b = map(int, expression.split(" ÷ "))
                assert a % b == 0
        assert r["output"].endswith(f"\n答案：{equations[-1][1]}")


def test_rlhf_files_use_the_belle_template():
    for r in read("preference.jsonl"):
        for text in (r["chosen"], r["rejected"]):
            assert text.startswith("Human: \n") and "\n\nAssistant: \n" in text
        assert r["chosen"] != r["rejected"]
    for r in read("dpo.jsonl"):
        assert r["prompt"].startswith("Human: \n") and r["prompt"].endswith("\n\nAssistant: \n")
        assert r["chosen"] != r["rejected"]
    assert all(r["text"].endswith("\n\nAssistant: \n") for r in read("prompts.jsonl"))


@pytest.mark.parametrize("seed", [0, 7])
def test_generate_instruction_records_is_deterministic_per_seed(seed):
    first = generate_instruction_records(500, seed)
    assert first == generate_instruction_records(500, seed) and len(first) == 500
    assert first != generate_instruction_records(500, seed + 1)
    assert json.dumps(first[:3], ensure_ascii=False)  # plain JSON-serialisable records
