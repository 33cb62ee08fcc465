"""PPO's role objects on real DeepSpeed engines (a world of one on CPU, the tiny model): padding changes no
log-prob, value or score; the reference is the initial policy (a frozen copy, or the LoRA actor with its adapters
off); generation is reseeded per step; a reward model scores as its own Hugging Face forward does."""

import dataclasses

import pytest
import torch

from belle.config.ppo import PpoConfig, RewardConfig

PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17]]
RESPONSES = [[20, 21, 2], [22, 23, 24, 25, 26], [27]]  # 2 is the EOS


@pytest.fixture
def hosted(job, local_world, tmp_path):
    """``hosted(*overrides, roles=…, placed=RolesConfig(…), **ppo)`` → the role objects of a PPO job built in this
    process."""
    from belle.rlhf.local import LocalRoles

    def _hosted(*overrides: str, roles=None, placed=None, **ppo):
        composed = job("data=sample_prompts", "strategy.precision=fp32", "monitor=off", "optim.lr=1e-2",
                       "optim.warmup_steps=0", "train.max_steps=4", *overrides)
        composed.roles = placed
        composed.method.ppo = PpoConfig(**dict(
            rollout_batch=4, mini_batch=4, max_new_tokens=6, temperature=0.7, critic_init="policy",
            reward=RewardConfig(source="rule", rule="chinese_ratio")) | ppo)
        composed.__post_init__()  # the job-level checks and sizes, as composing these settings would give
        return LocalRoles(composed, tmp_path / "run", roles).host.objects

    return _hosted


def batch(rows=None):
    from belle.recipes.ppo import _pad_batch

    rows = range(len(PROMPTS)) if rows is None else rows
    return _pad_batch([PROMPTS[i] for i in rows], [RESPONSES[i] for i in rows], pad=3)


def agree_alone(method, rtol=0, atol=1e-5):
    """``method`` on the padded batch equals it on each row alone, on that row's response tokens."""
    together = method(batch())
    for row, response in enumerate(RESPONSES):
        alone = method(batch([row]))
        assert together[row, :len(response)] == pytest.approx(alone[0, :len(response)], rel=rtol, abs=atol)
    return together


@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_padding_changes_no_log_prob_or_value_and_the_reference_starts_equal(hosted, stage):
    roles = hosted("method=ppo", f"strategy={stage}")
    actor, critic, reference = roles["actor"], roles["critic"], roles["reference"]
    log_probs = agree_alone(actor.log_probs)
    assert agree_alone(reference.log_probs) == pytest.approx(log_probs, abs=1e-6)
    agree_alone(critic.values)
    assert torch.all(log_probs < 0)


def test_lora_reference_is_the_actor_with_its_adapters_off(hosted):
    actor = hosted("method=ppo_lora", "strategy=zero2", roles=("actor",))["actor"]
    before = agree_alone(actor.log_probs)
    data = batch()
    shard = data | {"old_log_probs": before, "advantages": torch.ones_like(before), "tokens": float(
        data["response_mask"].sum())}
    stats = actor.update([shard])
    assert stats["max:first_minibatch_ratio_err"] < 1e-6  # dropout is off: the first pass replays the rollout
    after, reference = actor.log_probs(data), actor.log_probs(data, adapters=False)
    mask = data["response_mask"]
    assert reference[mask] == pytest.approx(before[mask], abs=1e-6)
    assert (after[mask] - before[mask]).abs().max() > 1e-3  # the adapters (and the saved modules) trained


def test_generation_is_reseeded_by_step_and_rank(hosted):
    actor = hosted("method=ppo", "strategy=zero3", roles=("actor",))["actor"]
    first = actor.generate(PROMPTS, step=5)
    assert actor.generate(PROMPTS, step=5) == first
    assert actor.generate(PROMPTS, step=6) != first
    assert len(first) == 3 and all(len(row) <= 6 for row in first)


def test_reward_model_scores_the_last_response_token_as_its_own_forward_does(hosted, job, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from belle.config.roles import RoleConfig, RolesConfig
    from belle.model.load import build_model, load_tokenizer

    folder = tmp_path / "rm"
    tiny = job().model
    build_model(tiny, "sdpa", dtype=torch.float32, seed=3, task="score").save_pretrained(folder)
    load_tokenizer(tiny).save_pretrained(folder)
    rm = dataclasses.replace(tiny, name="tiny_rm", path=str(folder), random_init=False)

    reward = hosted("method=ppo", "strategy=zero2", roles=("reward",), placed=RolesConfig(reward=RoleConfig(model=rm)),
                    reward=RewardConfig(source="model"), critic_init="reward")["reward"]
    scores = reward.score(batch())
    model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32)
    for row, (prompt, response) in enumerate(zip(PROMPTS, RESPONSES, strict=True)):
        with torch.no_grad():
            expected = model(torch.tensor([prompt + response])).logits[0, 0].item()
        assert scores[row].item() == pytest.approx(expected, abs=1e-5)
