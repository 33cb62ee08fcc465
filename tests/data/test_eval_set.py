"""BELLE's eval set and judge prompts: files shaped like BELLE's (its class-name traps), the refusals, the bundled
stand-in."""

import json
from collections import Counter

import pytest

from belle.data.eval_set import (
    CATEGORIES,
    OTHERS,
    category,
    check_prompts,
    class_key,
    item_id,
    read_eval,
    read_eval_set,
    read_judge_prompts,
)
from belle.data.records import SAMPLES_DIR, DataError

NBSP = "\u00a0"
SET = SAMPLES_DIR / "eval" / "eval_set.jsonl"
PROMPTS = SAMPLES_DIR / "eval" / "eval_prompt.jsonl"
BELLE_CLASSES = {"open qa", "brainstorming", "generation", "rewrite", "math", "classification", "closed qa",
                 "summarization", "translation", "code", "extract"}


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def _refused(call, *args) -> str:
    with pytest.raises(DataError) as info:
        call(*args)
    assert "\n" not in str(info.value)
    return str(info.value)


ITEMS = [
    {"question": "天空为什么是蓝的？", "std_answer": "因为瑞利散射。", "class": "open qa"},
    {"question": "写一首诗。", "std_answer": "", "class": "generation"},
    {"question": "短文：小李七点起床。问：小李几点起床？", "std_answer": "七点。", "class": f"closed{NBSP}qa"},
    {"question": "1+1=?", "std_answer": "1+1=2", "class": "math"},
    {"question": "翻译：你好", "std_answer": "Hello", "class": "translation"},
]
PROMPT_RECORDS = [
    {"class": "open QA", "prompt": "p-open"},
    {"class": "generation", "prompt": "p-gen"},
    {"class": f"closed{NBSP}QA", "prompt": "p-closed"},
    {"class": "math", "prompt": "p-math"},
    {"class": "translation", "prompt": "p-trans"},
]


@pytest.mark.parametrize(
    "name, key",
    [
        ("open QA", "open qa"),
        (f"closed{NBSP}QA", "closed qa"),
        (f"closed{NBSP}qa", "closed qa"),
        ("  Open   QA ", "open qa"),
        (f"closed{NBSP} QA", "closed qa"),
        ("Brainstorming", "brainstorming"),
    ],
)
def test_class_key(name, key):
    assert class_key(name) == key


def test_categories_follow_the_paper():
    assert CATEGORIES == ("open qa", "brainstorming", "classification", "generation", "summarization", "rewrite",
                          "closed qa", "extract", "others")
    assert OTHERS == "others"
    assert [category(k) for k in ("translation", "math", "code", "rewrite", "open qa", "my labels")] == [
        "rewrite", "others", "others", "rewrite", "open qa", "my labels"]


@pytest.mark.parametrize("shape", ["jsonl", "array"])
def test_belle_shaped_files_load_and_match_their_prompts(tmp_path, shape):
    if shape == "jsonl":  # BELLE's own shape: JSON lines under a .json name
        set_path = _jsonl(tmp_path / "eval_set.json", ITEMS)
    else:
        set_path = tmp_path / "eval_set.json"
        set_path.write_text(json.dumps(ITEMS, ensure_ascii=False, indent=1), encoding="utf-8")
    prompt_path = _jsonl(tmp_path / "eval_prompt.json", PROMPT_RECORDS)
    items, prompts = read_eval(set_path, prompt_path)
    assert [i.cls for i in items] == [r["class"] for r in ITEMS]  # the class as written
    assert [i.key for i in items] == ["open qa", "generation", "closed qa", "math", "translation"]
    assert [i.category for i in items] == ["open qa", "generation", "closed qa", "others", "rewrite"]
    assert [i.reference for i in items] == ["因为瑞利散射。", None, "七点。", "1+1=2", "Hello"]
    assert [i.question for i in items] == [r["question"] for r in ITEMS]
    assert [prompts[i.key] for i in items] == ["p-open", "p-gen", "p-closed", "p-math", "p-trans"]
    where = [i.where for i in items]
    assert where == ([f"{set_path}:{n}" for n in range(1, 6)] if shape == "jsonl"
                     else [f"{set_path}:#{n}" for n in range(5)])


def test_ids_are_given_or_a_stable_hash(tmp_path):
    records = [dict(ITEMS[0], id="q-1"), dict(ITEMS[1], id=7), ITEMS[2]]
    items = read_eval_set(_jsonl(tmp_path / "set.jsonl", records))
    assert [i.id for i in items[:2]] == ["q-1", "7"]
    hashed = items[2].id
    assert len(hashed) == 12 and int(hashed, 16) >= 0
    assert hashed == item_id(ITEMS[2]["question"], "closed qa")
    # the same question under the same class however written gets the same id; another class another id
    relabelled = read_eval_set(_jsonl(tmp_path / "other.jsonl", [dict(ITEMS[2], **{"class": "Closed QA"}),
                                                                 dict(ITEMS[2], **{"class": "open qa"})]))
    assert relabelled[0].id == hashed and relabelled[1].id != hashed


def test_duplicate_ids_are_refused_naming_both_places(tmp_path):
    path = _jsonl(tmp_path / "set.jsonl", [dict(ITEMS[0], id="a"), dict(ITEMS[1], id="b"), dict(ITEMS[3], id="a")])
    assert _refused(read_eval_set, path) == (
        f"{path}:3: id 'a' is also at {path}:1: remove the duplicate or give each its own id")
    path = _jsonl(tmp_path / "twice.jsonl", [ITEMS[0], ITEMS[1], dict(ITEMS[0], std_answer="另一个")])
    assert _refused(read_eval_set, path) == (
        f"{path}:3: this question and class is also at {path}:1: remove the duplicate or give each its own id")


def test_a_class_without_a_prompt_is_refused_at_load_with_its_count(tmp_path):
    set_path = _jsonl(tmp_path / "set.jsonl", ITEMS + [dict(ITEMS[0], question=f"问题{n}") for n in range(2)])
    prompt_path = _jsonl(tmp_path / "prompts.jsonl", [r for r in PROMPT_RECORDS if r["class"] != "open QA"])
    assert _refused(read_eval, set_path, prompt_path) == (
        f"class 'open qa' (3 items) has no judge prompt in {prompt_path}: add a {{\"class\",\"prompt\"}} line for it")
    items = read_eval_set(set_path)
    only_math = read_judge_prompts(_jsonl(tmp_path / "math.jsonl", [PROMPT_RECORDS[3]]))
    message = _refused(check_prompts, items, only_math)
    assert message.startswith("class 'open qa' (3 items), class 'generation' (1 item), class 'closed\\xa0qa' (1 item)"
                              ", class 'translation' (1 item) have no judge prompt in the judge prompts: add a ")
    assert message.endswith("line for each")


@pytest.mark.parametrize(
    "record, problem",
    [
        ({"std_answer": "x", "class": "open qa"}, "'question' is missing"),
        ({"question": "  ", "std_answer": "x", "class": "open qa"}, "'question' is empty"),
        ({"question": "q", "std_answer": "x", "class": ""}, "'class' is empty"),
        ({"question": "q", "std_answer": "x"}, "'class' is missing"),
        ({"question": "q", "std_answer": 3, "class": "math"}, "'std_answer' is not a string (got int)"),
        ({"question": ["q"], "std_answer": "", "class": "math"}, "'question' is not a string (got list)"),
        ({"question": "q", "std_anwser": "x", "class": "math"}, "unknown key(s) 'std_anwser'"),
    ],
)
def test_a_record_that_is_no_eval_item_is_named(tmp_path, record, problem):
    path = _jsonl(tmp_path / "set.jsonl", [ITEMS[0], record])
    assert _refused(read_eval_set, path) == (
        f'{path}:2: {problem}: an eval item is {{"question": str, "std_answer": str, "class": str}} (plus an '
        'optional "id")')


def test_a_missing_std_answer_is_no_reference_and_bad_ids_are_refused(tmp_path):
    (item,) = read_eval_set(_jsonl(tmp_path / "set.jsonl", [{"question": "q", "class": "Mine"}]))
    assert (item.reference, item.key, item.category) == (None, "mine", "mine")
    path = _jsonl(tmp_path / "bad.jsonl", [dict(ITEMS[0], id=True)])
    assert "'id' True is no id: give a non-empty string or an integer" in _refused(read_eval_set, path)


def test_empty_files_are_refused(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    assert _refused(read_eval_set, empty).startswith(f"{empty}: holds no eval item: point it at BELLE's eval_set.json")
    assert _refused(read_judge_prompts, empty).startswith(f"{empty}: holds no judge prompt")


def test_judge_prompt_records_are_checked(tmp_path):
    twice = [{"class": "open qa", "prompt": "a"}, {"class": "Open QA", "prompt": "b"}]
    path = _jsonl(tmp_path / "prompts.jsonl", twice)
    assert _refused(read_judge_prompts, path) == f"{path}:2: class 'Open QA' has a prompt already at {path}:1: keep one"
    path = _jsonl(tmp_path / "bad.jsonl", [{"class": "math"}])
    assert _refused(read_judge_prompts, path) == (
        f'{path}:1: \'prompt\' is missing: a judge prompt is {{"class": str, "prompt": str}}')


def test_the_bundled_stand_in_loads_with_a_prompt_for_every_class():
    items, prompts = read_eval(SET, PROMPTS)
    assert 25 <= len(items) <= 40
    assert {i.key for i in items} == BELLE_CLASSES == set(prompts)
    assert {i.category for i in items} == set(CATEGORIES)
    # BELLE's traps: classes written as BELLE writes them, a real NO-BREAK SPACE, capitals only in the prompt file
    assert {i.cls for i in items} == BELLE_CLASSES - {"closed qa"} | {f"closed{NBSP}qa"}
    prompt_classes = [json.loads(line)["class"] for line in PROMPTS.read_text(encoding="utf-8").splitlines()]
    assert "open QA" in prompt_classes and f"closed{NBSP}QA" in prompt_classes
    assert NBSP in SET.read_text(encoding="utf-8") and NBSP in PROMPTS.read_text(encoding="utf-8")
    # std_answer is "" exactly for generation, brainstorming and rewrite
    assert {i.key for i in items if i.reference is None} == {"generation", "brainstorming", "rewrite"}
    lines = SET.read_text(encoding="utf-8").splitlines()
    assert all(list(json.loads(line)) == ["question", "std_answer", "class"] for line in lines)  # BELLE's key order
    assert all('"得分:"' in p and "0" in p and "1" in p for p in prompts.values())
    counts = Counter(i.key for i in items)
    assert min(counts.values()) >= 2 and counts["math"] >= 3


def test_the_bundled_math_references_end_in_a_checkable_number():
    from belle.score.rules import math_final, unscorable

    math = [i for i in read_eval_set(SET) if i.key == "math"]
    assert any("答案" in i.reference for i in math) and any("答案" not in i.reference for i in math)
    for item in math:
        assert unscorable("math_final", item.reference) is None
        assert math_final(item.reference, item.reference) == 1.0
