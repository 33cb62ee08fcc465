"""Preference pairs: split, checked, tokenised, cut and cached as the RM and DPO recipes read them."""

import json

import pytest

from belle.config import DataConfig
from belle.data.cache import open_cache
from belle.data.dataset import build_pairs
from belle.data.pairs import pair_rows, to_pair
from belle.data.prepare import prepare
from belle.data.records import SAMPLES_DIR, DataError
from belle.data.template import IGNORE_INDEX, pad_id

PROMPT = "Human: \nA\n\nAssistant: \nB\n\nHuman: \nC\n\nAssistant: \n"


def _jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return str(path)


def test_a_preference_record_splits_at_its_last_assistant_prefix():
    record = {"chosen": PROMPT + "good", "rejected": PROMPT + "bad"}
    assert to_pair(record, "f:1", "preference") == (PROMPT, "good", "bad")
    assert to_pair({"prompt": PROMPT, "chosen": "good", "rejected": "bad"}, "f:1", "dpo") == (PROMPT, "good", "bad")


@pytest.mark.parametrize("record,message", [
    ({"chosen": PROMPT + "same", "rejected": PROMPT + "same"}, "f:3: chosen and rejected are the same answer"),
    ({"prompt": "p", "chosen": "x", "rejected": "x"}, "f:3: chosen and rejected are the same answer"),
    ({"chosen": "no template", "rejected": PROMPT + "bad"}, "f:3: chosen has no answer after a"),
    ({"chosen": PROMPT + "good", "rejected": "Human: \nZ\n\nAssistant: \nbad"}, "f:3: chosen and rejected answer "),
    ({"instruction": "q", "output": "a"}, "f:3: a instruction record, not a preference pair"),
    ({"text": "Human: \nq\n\nAssistant: \n"}, "f:3: a text record, not a preference pair"),
])
def test_bad_pairs_name_their_line_and_the_fix(record, message):
    with pytest.raises(DataError) as info:
        to_pair(record, "f:3", "preference")
    assert str(info.value).startswith(message) and ": " in str(info.value)[len(message):]


def test_reward_model_pairs_keep_the_prompt_whole_and_the_eos_last(tokenizer, tmp_path):
    long_answer = "很长的回答" * 40
    spec = _jsonl(tmp_path / "p.jsonl", [{"chosen": PROMPT + long_answer, "rejected": PROMPT + "短"}])
    [(chosen, rejected)], stats = build_pairs(spec, tokenizer, 48, "preference")
    eos = tokenizer.eos_token_id
    assert len(chosen.input_ids) == 48 and chosen.input_ids[-1] == eos and rejected.input_ids[-1] == eos
    prompt = tokenizer.encode(PROMPT, add_special_tokens=False)
    assert chosen.input_ids[: len(prompt)] == prompt and chosen.labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
    assert chosen.labels[len(prompt):] == chosen.input_ids[len(prompt):]
    assert (stats.truncated, stats.dropped_no_trained_tokens) == (1, 0)


def test_pairs_whose_prompt_fills_max_length_are_dropped_and_all_dropped_is_an_error(tokenizer, tmp_path):
    spec = _jsonl(tmp_path / "p.jsonl", [
        {"chosen": PROMPT * 20 + "a", "rejected": PROMPT * 20 + "b"},
        {"chosen": PROMPT + "a", "rejected": PROMPT + "b"},
    ])
    pairs, stats = build_pairs(spec, tokenizer, 64, "preference")
    assert (len(pairs), stats.dropped_no_trained_tokens) == (1, 1)
    with pytest.raises(DataError, match="all 2 samples have no answer token left.*raise data.max_length"):
        build_pairs(spec, tokenizer, 8, "preference")


def test_dpo_rows_cut_the_prompt_from_the_left_and_the_answer_from_the_right(tokenizer, tmp_path):
    data = DataConfig(name="d", path=_jsonl(tmp_path / "d.jsonl", [
        {"prompt": PROMPT * 8, "chosen": "回答" * 60, "rejected": "不"},
    ]), format="dpo", pack=False, max_length=64, cache_dir=str(tmp_path / "cache"))
    prepare(data, tokenizer, processes=1)
    _, [pair] = open_cache(data, tokenizer)
    chosen, rejected = pair_rows([pair], pad_id(tokenizer), 64, max_prompt_length=16)
    prompt = tokenizer.encode(PROMPT * 8, add_special_tokens=False)
    assert chosen.input_ids[:16] == prompt[-16:] and chosen.labels[:16] == [IGNORE_INDEX] * 16
    assert len(chosen.input_ids) - chosen.n_pad == 64 and chosen.labels[16] != IGNORE_INDEX
    assert rejected.input_ids[:16] == prompt[-16:] and rejected.n_pad == 64 - 16 - 2  # "不" and EOS
    assert rejected.position_ids[18:] == list(range(rejected.n_pad))  # the pad tail is a sequence of its own


@pytest.mark.parametrize("fmt,name", [("preference", "preference.jsonl"), ("dpo", "dpo.jsonl")])
def test_the_cache_holds_the_in_memory_pairs_with_the_first_ones_held_out(tokenizer, tmp_path, fmt, name):
    data = DataConfig(name="p", path=str(SAMPLES_DIR / name), format=fmt, pack=False, max_length=96,
                      eval_samples=16, cache_dir=str(tmp_path))
    meta = prepare(data, tokenizer, processes=2).meta
    eval_pairs, train_pairs = open_cache(data, tokenizer)
    pairs, stats = build_pairs(data.path, tokenizer, 96, fmt)
    assert meta["stats"]["samples"] == stats.samples == 300 and len(eval_pairs) == 16
    assert len(train_pairs) == 300 - 16 - meta["stats"]["eval_copies"]
    for cached, (chosen, rejected) in zip(eval_pairs, pairs[:16], strict=True):
        assert list(cached.chosen) == chosen.input_ids and list(cached.rejected) == rejected.input_ids
        assert cached.chosen_start == chosen.labels.count(IGNORE_INDEX)
    assert [train_pairs[i].index for i in (0, 5)] == [0, 5]
    held_out = {(tuple(p.chosen), tuple(p.rejected)) for p in eval_pairs}
    assert not held_out & {(tuple(p.chosen), tuple(p.rejected)) for p in train_pairs}
