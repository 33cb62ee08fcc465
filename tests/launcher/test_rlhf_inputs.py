"""RLHF inputs checked on the submitting machine before any cluster resource, each refused in one line naming the fix:
prompts a rule reward cannot score (file:line of the first, their count), a non-finite RM margin, strategy keys PPO
never reads, launcher.prepare for PPO. And what launcher.preview shows of prompts and pairs, and a PPO plan with the
roles' own batches and no SFT batch arithmetic. In process where it can be, else dry runs with the ``cli`` fixture."""

import json
from pathlib import Path

import pytest
import yaml

from belle.data.records import SAMPLES_DIR, DataError
from belle.rundir import PREVIEW
from launcher.app import run
from launcher.inspect_data import inspect_data
from launcher.plan import make_plan
from launcher.report import describe

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


def _records(name: str) -> list[dict]:
    return [json.loads(line) for line in (SAMPLES_DIR / name).read_text(encoding="utf-8").splitlines()]


def _preview(cfg, tmp_path, *overrides) -> list[dict]:
    run(cfg(*overrides, "launcher.preview=2", f"launcher.run_dir={tmp_path / 'run'}"))
    return [json.loads(line) for line in (tmp_path / "run" / PREVIEW).read_text(encoding="utf-8").splitlines()]


def test_a_ppo_preview_shows_text_prompts_with_nothing_trained(cli, tmp_path):
    out = cli("+exp=ppo_7b", "+smoke=tiny", "launcher.preview=2", f"launcher.run_dir={tmp_path / 'run'}")
    assert out.returncode == 0, out.stderr
    assert "PPO prompts: none of their tokens is trained, only the responses generated after them" in out.stdout
    rows = [json.loads(line) for line in (tmp_path / "run" / PREVIEW).read_text(encoding="utf-8").splitlines()]
    assert [row["text"] for row in rows] == [record["text"] for record in _records("prompts.jsonl")[:2]]
    for i, row in enumerate(rows):
        assert set(row["labels"]) == {-100} and len(row["labels"]) == len(row["input_ids"]) > 5
        assert f"--- sample {i}: {len(row['input_ids'])} tokens, 0 trained ---" in out.stdout


def test_a_math_prompt_preview_shows_the_question_and_the_rules_reference_not_its_answer(cfg, tmp_path, capsys):
    rows = _preview(cfg, tmp_path, *MATH_RULE)
    records = _records("math.jsonl")[:2]
    assert [row["text"] for row in rows] == [f"Human: \n{r['instruction']}\n\nAssistant: \n" for r in records]
    assert [row["reference"] for row in rows] == [r["output"] for r in records]
    assert all(set(row["labels"]) == {-100} for row in rows)
    assert "(reference answer, compared by the rule, not shown to the model: " in capsys.readouterr().out


def test_a_pair_preview_marks_the_chosen_then_the_rejected_answer_as_trained(cfg, job, tmp_path):
    from belle.model.load import load_tokenizer

    tokenizer = load_tokenizer(job("+exp=rm_7b", "+smoke=tiny").model)
    rows = _preview(cfg, tmp_path, "+exp=rm_7b", "+smoke=tiny")
    pairs = _records("preference.jsonl")[:2]
    answers = [pair[side].rpartition("\n\nAssistant: \n")[2] for pair in pairs for side in ("chosen", "rejected")]
    trained = [tokenizer.decode([t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != -100])
               for row in rows]
    assert trained == [answer + tokenizer.eos_token for answer in answers]
    assert [row["text"] for row in rows] == [pair[side] + tokenizer.eos_token for pair in pairs
                                             for side in ("chosen", "rejected")]


def test_prepare_is_refused_for_ppo_which_reads_its_prompts_directly(cfg, tmp_path):
    with pytest.raises(ValueError) as info:
        run(cfg("+exp=ppo_7b", "+smoke=tiny", "launcher.prepare=true", f"launcher.run_dir={tmp_path / 'run'}"))
    assert str(info.value) == (
        "launcher.prepare=true builds a training data cache, but PPO reads its prompts directly and has none: drop "
        "launcher.prepare; launcher.dry_run=true reads and checks them and plans the run")
    assert not (tmp_path / "run" / "plan.json").exists()


def test_no_sample_builder_pretends_prompts_are_sft_records():
    from belle.data.dataset import builder

    with pytest.raises(ValueError, match=r"^data.format=prompt has no training samples to build: prompts are "
                                         r"read by belle.data.prompts.read_prompts$"):
        builder("prompt")


def _plan(job, *overrides) -> dict:
    composed = job(*overrides)
    facts, warnings = inspect_data(composed, strict=False)
    return make_plan(composed, facts, warnings)


def test_a_ppo_plan_with_its_roles_own_micro_batches_runs_no_sft_batch_arithmetic(job):
    """ppo_7b with 32 sequences per step: strategy.micro_batch (2, from the preset) × 16 GPUs does not divide 32, and
    that no longer matters; the roles' own micro-batches of 2 do."""
    plan = _plan(job, "+exp=ppo_7b", "strategy.global_batch=32", "roles.actor.micro_batch=2",
                 "roles.critic.micro_batch=2")
    assert not {"batch", "memory_gib_per_gpu", "deepspeed"} & set(plan)
    assert plan["placement"]["layout"] and plan["schedule"]["lr"] == 1.41e-5
    text = describe(plan)
    assert "  batch " not in text and "memory/GPU" not in text
    assert "  step       32 prompts x 1" in text
    sft = _plan(job, "+exp=ft_2m")
    assert sft["batch"]["grad_accumulation"] == 2 and sft["memory_gib_per_gpu"]["fits"] is not None


@pytest.mark.parametrize("strategy,key", [("zero3_offload", "offload_optimizer")])
def test_strategy_offload_is_refused_under_ppo(job, strategy, key):
    from belle.recipes import recipe

    def check(*overrides):
        recipe("ppo").check(job("+exp=ppo_7b", "launcher.dry_run=true", *overrides), set(), None)

    with pytest.raises(ValueError) as info:
        check(f"strategy={strategy}")
    assert str(info.value) == (
        f"strategy.{key}=true is not read by PPO, whose roles offload one by one: set strategy.{key}=false (or "
        "strategy=zero3) and roles.actor.offload=true roles.critic.offload=true")
    with pytest.raises(ValueError, match=r"^strategy.offload_params=true is not read by PPO"):
        check("strategy.offload_params=true")
    with pytest.raises(ValueError, match=r"^roles.rollout.engine=vllm is not run yet: .*set roles.rollout.engine=hf$"):
        check("roles=separate", "roles.rollout.engine=vllm", "cluster=slurm", "cluster.gpus_per_node=8")


def test_strategy_micro_batch_on_a_ppo_command_line_is_refused(cli, tmp_path):
    out = cli("+exp=ppo_7b", "strategy.micro_batch=8", "launcher.dry_run=true", f"launcher.run_dir={tmp_path / 'r'}")
    assert out.returncode == 2
    assert out.stderr == (
        "error: strategy.micro_batch=8 is not read by PPO, whose roles have micro-batches of their own: remove it and "
        "set roles.actor.micro_batch=8 roles.critic.micro_batch=8 (now 4 and 4)\n")
    assert not (tmp_path / "r" / "plan.json").exists()


def test_no_ppo_experiment_sets_a_strategy_key_ppo_never_reads():
    experiments = sorted((Path(__file__).parents[2] / "conf" / "exp").glob("ppo*.yaml"))
    assert len(experiments) == 3
    for path in experiments:
        strategy = yaml.safe_load(path.read_text()).get("strategy", {})
        assert not {"micro_batch", "offload_optimizer", "offload_params"} & set(strategy), path.name
