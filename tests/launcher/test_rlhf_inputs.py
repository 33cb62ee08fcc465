"""RLHF inputs checked on the submitting machine before any cluster resource, each refused in one line naming the fix:
prompts a rule reward cannot score (file:line of the first, their count). In process, on small JSONL files."""

import json

import pytest

from belle.data.records import SAMPLES_DIR, DataError
from launcher.inspect_data import inspect_data

MATH_RULE = ("+exp=ppo_math_rule", "+smoke=tiny")
"""PPO scored by the math_answer rule (it compares each response's 答案：N with the prompt's reference answer)."""
FIX = ("point data.path at prompt records whose answer ends with BELLE's 答案：N (instruction or conversation records, "
       "e.g. data=sample_math_prompts), or set method.ppo.reward.rule=<one of chinese_ratio, length_target>")


def _jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return str(path)


def _refused(job, *overrides) -> str:
    with pytest.raises(DataError) as info:
        inspect_data(job(*overrides), strict=True)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_text_prompts_have_no_reference_for_math_answer(job, tmp_path):
    path = _jsonl(tmp_path / "prompts.jsonl", [{"text": f"Human: \n{n} + 1 = ?\n\nAssistant: \n"} for n in range(3)])
    assert _refused(job, *MATH_RULE, f"data.path={path}") == (
        f"{path}:1: method.ppo.reward.rule=math_answer cannot score this prompt: it has no reference answer "
        f'({{"text"}} prompts carry none) (3 of 3 prompts are like it): {FIX}')
    facts, _ = inspect_data(job(*MATH_RULE, f"data.path={path}", "method.ppo.reward.rule=chinese_ratio"), strict=True)
    assert facts.num_samples == 3  # a rule that reads the response alone scores them


def test_a_reference_without_a_final_answer_is_named_by_its_line(job, tmp_path):
    good = {"instruction": "题目：2 + 3 = ?", "input": "", "output": "2 + 3 = 5\n答案：5"}
    bare = {"instruction": "题目：4 + 4 = ?", "input": "", "output": "8"}  # a bare number is a reference too
    records = [good, bare, {"instruction": "题目：你好", "input": "", "output": "你好！"}, good,
               {"conversations": [{"from": "human", "value": "题目：1 + 1 = ?"},
                                  {"from": "assistant", "value": "等于二"}]}]
    path = _jsonl(tmp_path / "math.jsonl", records)
    assert _refused(job, *MATH_RULE, f"data.path={path}") == (
        f"{path}:3: method.ppo.reward.rule=math_answer cannot score this prompt: its reference answer '你好！' has no "
        f"final 答案：N (2 of 5 prompts are like it): {FIX}")


def test_the_bundled_math_prompts_are_all_scorable(job):
    facts, _ = inspect_data(job(*MATH_RULE, "data=sample_math_prompts"), strict=True)
    assert facts.num_samples == sum(1 for _ in (SAMPLES_DIR / "math.jsonl").open())


def test_a_dry_run_on_text_prompts_with_math_answer_exits_2_before_ray(cli, tmp_path):
    out = cli(*MATH_RULE, "data=sample_prompts", "launcher.dry_run=true", f"launcher.run_dir={tmp_path / 'run'}")
    assert out.returncode == 2
    assert out.stderr.startswith(f"error: {SAMPLES_DIR / 'prompts.jsonl'}:1: method.ppo.reward.rule=math_answer "
                                 "cannot score this prompt: it has no reference answer")
    assert len(out.stderr.splitlines()) == 1 and "Ray" not in out.stdout


@pytest.mark.parametrize("margin", ["nan", "inf", "-inf"])
def test_a_non_finite_reward_model_margin_is_refused(job, margin):
    with pytest.raises(ValueError) as info:
        job("+exp=rm_7b", "+smoke=tiny", f"method.rm.margin={margin}")
    assert str(info.value) == (
        f"method.rm.margin={float(margin)} must be a finite number (the loss would be non-finite from step 1): set "
        "method.rm.margin=0")
    assert job("+exp=rm_7b", "+smoke=tiny", "method.rm.margin=-0.5").method.rm.margin == -0.5


def test_an_infinite_centring_weight_is_refused(job):
    with pytest.raises(ValueError, match=r"^method.rm.center_coef=inf must be a finite number >= 0: set "
                                         r"method.rm.center_coef=0$"):
        job("+exp=rm_7b", "+smoke=tiny", "method.rm.center_coef=inf")


def test_a_non_finite_first_loss_blames_the_inputs_and_a_later_one_the_learning_rate():
    from belle.recipes.common import check_finite

    check_finite(0.69, 1)
    with pytest.raises(RuntimeError) as first:
        check_finite(float("nan"), 1)
    assert str(first.value) == (
        "the training loss is nan at optimizer step 1, before the learning rate could move the weights far: most "
        "likely an input is not finite: check the weights at model.path, the data and the method's settings (e.g. "
        "method.rm.margin); no checkpoint was written")
    with pytest.raises(RuntimeError, match=r"^the training loss is inf at optimizer step 7: lower optim.lr, raise "
                                           r"optim.warmup_steps"):
        check_finite(float("inf"), 7)
