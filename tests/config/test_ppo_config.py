"""PPO's settings (method.ppo): each bad one fails in one line naming the override that fixes it; the roles a job
runs, their ZeRO stages and models follow from the job."""

import dataclasses

import pytest

from belle.config.ppo import (
    KlConfig,
    PpoConfig,
    RewardConfig,
    frozen_roles,
    missing_reward_model,
    present_roles,
    role_model,
    role_model_source,
    scores_from_reward_model,
    zero_stage,
)
from belle.config.roles import RoleConfig, RolesConfig

RULE = RewardConfig(source="rule", rule="chinese_ratio")


def _error(make) -> str:
    with pytest.raises(ValueError) as info:
        make()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_are_bellelike_and_sizes_follow_the_job():
    ppo = PpoConfig()
    assert (ppo.clip, ppo.value_clip, ppo.lam) == (0.2, 0.2, 0.95)
    assert (ppo.kl.coef, ppo.kl.target, ppo.reward.source, ppo.reward.clip, ppo.critic_init) == (
        0.2, None, "model", 5.0, "reward")
    ppo.resolve(global_batch=512, max_length=1024, actor_micro_batch=4, world_size=16)  # ppo_7b's job
    assert (ppo.rollout_batch, ppo.max_prompt_length, ppo.max_new_tokens, ppo.mini_batch) == (512, 512, 512, 64)
    assert ppo.sequences == 512


@pytest.mark.parametrize("settings,fix", [
    ({"clip": 0}, "set method.ppo.clip=0.2"),
    ({"value_clip": -1}, "set method.ppo.value_clip=0.2"),
    ({"gamma": 0}, "set method.ppo.gamma=1"),
    ({"gamma": 1.5}, "set method.ppo.gamma=1"),
    ({"lam": -0.1}, "set method.ppo.lam=0.95"),
    ({"lam": 1.1}, "set method.ppo.lam=0.95"),
    ({"temperature": 0}, "set method.ppo.temperature=1.0"),
    ({"top_p": 0}, "set method.ppo.top_p=1.0"),
    ({"top_p": 1.2}, "set method.ppo.top_p=1.0"),
    ({"epochs": 0}, "set method.ppo.epochs=1"),
    ({"rollout_batch": 0}, "set method.ppo.rollout_batch=32"),
    ({"max_new_tokens": float("nan")}, "set method.ppo.max_new_tokens=512"),
    ({"stop_kl": 0}, "set method.ppo.stop_kl=10"),
    ({"critic_lr": -1e-5}, "set method.ppo.critic_lr=1e-5"),
    ({"critic_warmup_steps": -1}, "set method.ppo.critic_warmup_steps=0"),
    ({"sample_every": -1}, "set method.ppo.sample_every=10"),
    ({"critic_init": "random"}, "set method.ppo.critic_init=<one of them>"),
    ({"rollout_batch": 6, "mini_batch": 4}, "6 sequences per step is not divisible by method.ppo.mini_batch=4: set "
                                            "method.ppo.mini_batch=2"),
    ({"rollout_batch": 1, "mini_batch": 1}, "set method.ppo.rollout_batch=2 or higher"),
    ({"reward": RULE}, "method.ppo.critic_init=reward needs a reward model, but method.ppo.reward.source=rule: set "
                       "method.ppo.critic_init=policy"),
])
def test_bad_ppo_settings(settings, fix):
    assert fix in _error(lambda: PpoConfig(**settings).resolve(32, 1024, 4, 2))


@pytest.mark.parametrize("settings,fix", [
    ({"coef": -0.1}, "set method.ppo.kl.coef=0.2"),
    ({"estimator": "k4"}, "set method.ppo.kl.estimator=<one of them>"),
    ({"target": 0}, "set method.ppo.kl.target=6"),
    ({"horizon": 0}, "set method.ppo.kl.horizon=10000"),
])
def test_bad_kl_settings(settings, fix):
    assert fix in _error(lambda: KlConfig(**settings))


@pytest.mark.parametrize("settings,fix", [
    ({"source": "human"}, "set method.ppo.reward.source=<one of them>"),
    ({"source": "rule"},
     "set method.ppo.reward.rule=<one of math_answer, chinese_ratio, length_target, math_final, exact_match>"),
    ({"source": "rule", "rule": "politeness"}, "set method.ppo.reward.rule=<one of them>"),
    ({"rule": "chinese_ratio"}, "set method.ppo.reward.source=rule, or method.ppo.reward.rule=null"),
    ({"clip": 0}, "set method.ppo.reward.clip=5"),
    ({"missing_eos_penalty": -1}, "set method.ppo.reward.missing_eos_penalty=0"),
])
def test_bad_reward_settings(settings, fix):
    assert fix in _error(lambda: RewardConfig(**settings))


def test_mini_batches_split_evenly_over_the_trained_ranks():
    ppo = PpoConfig(rollout_batch=64, mini_batch=16)
    ppo.check_batches(4, 4, "roles.actor")
    assert _error(lambda: ppo.check_batches(4, 3, "roles.actor")) == (
        "method.ppo.mini_batch=16 is not divisible by 4 actor workers × roles.actor.micro_batch=3: set "
        "method.ppo.mini_batch=12 or roles.actor.micro_batch=2")
    assert "set method.ppo.mini_batch=18" in _error(lambda: ppo.check_batches(3, 2, "roles.critic"))


def test_prompt_and_response_fit_the_model(job):
    model = job().model  # tiny_llama: 1024 positions
    PpoConfig(max_prompt_length=512, max_new_tokens=512).check_lengths(model)
    assert "set method.ppo.max_new_tokens=512" in _error(
        lambda: PpoConfig(max_prompt_length=512, max_new_tokens=1024).check_lengths(model))


def test_roles_stages_and_models_follow_the_job(job):
    full = job("method=ppo", "data=sample_prompts", "strategy=zero3", "method.ppo.reward.source=rule",
               "method.ppo.reward.rule=chinese_ratio", "method.ppo.critic_init=policy")
    assert present_roles(full) == ("actor", "critic", "reference")
    assert [zero_stage(full, role) for role in ("actor", "reference")] == [3, 3]
    assert role_model(full, "critic") is full.model

    lora = job("method=ppo_lora", "data=sample_prompts", "strategy=zero2")  # a reward model; the adapters off serve
    assert present_roles(lora) == ("actor", "critic", "reward")  # as the reference
    assert [zero_stage(lora, role) for role in ("actor", "reward")] == [2, 0]
    assert role_model(lora, "critic").path is None  # tiny_llama from its numbers: a fresh score head on it
    loaded = job("method=ppo_lora", "data=sample_prompts", "model.path=/models/policy")
    assert missing_reward_model(loaded).endswith("set method.ppo.reward_model=<a reward model's export folder, "
                                                 "e.g. runs/rm_7b/export>")
    named = job("method=ppo_lora", "data=sample_prompts", "model.path=/models/policy",
                "method.ppo.reward_model=/models/rm")
    assert missing_reward_model(named) is None and role_model(named, "reward").path == "/models/rm"
    assert role_model(named, "reward").tokenizer_path == "/models/policy"  # the policy's tokens are scored
    rm = dataclasses.replace(lora.model, name="tiny_rm", path="/models/rm")
    lora.roles = RolesConfig(reward=RoleConfig(model=rm, zero_stage=3))
    assert role_model(lora, "critic") is rm and role_model(lora, "reward") is rm
    assert zero_stage(lora, "reward") == 3


def test_each_roles_folder_is_named_by_its_setting_and_the_frozen_ones_are_known(job):
    full = job("method=ppo", "data=sample_prompts", "method.ppo.reward_model=/models/rm")
    assert [role_model_source(full, role)[1] for role in present_roles(full)] == [
        "model.path", "method.ppo.reward_model", "model.path", "method.ppo.reward_model"]  # actor critic ref reward
    assert [scores_from_reward_model(full, role) for role in present_roles(full)] == [False, True, False, True]
    assert frozen_roles(full) == ("reference", "reward")
    full.roles = RolesConfig(reward=RoleConfig(model=dataclasses.replace(full.model, path="/models/rm2")))
    assert role_model_source(full, "reward")[1] == role_model_source(full, "critic")[1] == "roles.reward.model.path"
    rule = job("method=ppo_lora", "data=sample_prompts", "method.ppo.reward.source=rule",
               "method.ppo.reward.rule=chinese_ratio", "method.ppo.critic_init=policy")
    assert frozen_roles(rule) == () and not scores_from_reward_model(rule, "critic")


def test_a_job_without_a_ppo_block_names_the_method(job):
    assert _error(lambda: present_roles(job())) == "the job has no method.ppo block: set method=ppo"


def test_the_config_names_what_the_rlhf_code_knows():
    from belle.config.ppo import KL_ESTIMATORS, REWARD_RULES
    from belle.rlhf import ppo_losses
    from belle.score import rules

    assert KL_ESTIMATORS == ppo_losses.KL_ESTIMATORS and tuple(rules.RULES) == REWARD_RULES


@pytest.mark.parametrize("overrides,fix", [
    (("roles=pairs",), "roles places PPO's roles, but method.name=sft: remove the roles override (or set method=ppo)"),
    (("method=ppo", "data=sample_prompts", "data.pack=true"), "never packed: set data.pack=false"),
    (("method=ppo",), "set data=sample_prompts (or other prompt data), or method.name=sft"),
    (("method=ppo", "data=sample_prompts", "data.max_length=2048"), "set data.max_length=1024"),
])
def test_a_ppo_job_that_cannot_work_is_refused_when_composed(job, overrides, fix):
    assert fix in _error(lambda: job(*overrides))


def test_uneven_micro_batches_over_the_placed_ranks_are_refused_by_the_plan(cfg, tmp_path):
    from launcher.app import run

    assert _error(lambda: run(cfg("method=ppo", "data=sample_prompts", "roles=colocate_all", "strategy.global_batch=8",
                                  "method.ppo.mini_batch=4", "roles.actor.micro_batch=4", "launcher.dry_run=true",
                                  f"launcher.run_dir={tmp_path}"))) == (
        "method.ppo.mini_batch=4 is not divisible by 2 actor workers × roles.actor.micro_batch=4: set "
        "method.ppo.mini_batch=8 or roles.actor.micro_batch=2")
    assert not tmp_path.exists() or not any(tmp_path.iterdir())


def test_a_ppo_job_fills_its_sizes_from_the_job_and_records_them(job):
    from belle.config import job_dict

    ppo_job = job("method=ppo", "data=sample_prompts", "data.max_length=512", "strategy.global_batch=16")
    assert ppo_job.roles.layout == "colocate_all"  # no roles group given: every role on every worker
    ppo = ppo_job.method.ppo
    assert (ppo.rollout_batch, ppo.max_prompt_length, ppo.max_new_tokens, ppo.mini_batch) == (16, 256, 256, 8)
    assert job_dict(ppo_job)["method"]["ppo"]["mini_batch"] == 8  # config.yaml holds the numbers the run used
