"""The PPO controller with every role in this process (LocalRoles: one pool, a world of one, real DeepSpeed on CPU)
and the tiny model: what one step calls and in which order, the checkpoint it leaves and when ``latest`` moves, an
exact resume after a stop request, stop_kl, a NaN loss, and a rule reward that rises while a tiny-lr control stays
flat."""

import json
import math

import pytest

from belle import stop
from belle.config.ppo import KlConfig, PpoConfig, RewardConfig
from belle.data.records import SAMPLES_DIR

STEP_CALLS = [("actor", "generate", "generate"), ("actor", "log_probs", "log_probs"),
              ("reference", "log_probs", "reference"), ("critic", "values", "values"),
              ("critic", "update", "critic"), ("actor", "update", "actor")]
SAVE_CALLS = [("actor", "save", "save"), ("critic", "save", "save")]
METRICS = ("reward_mean", "reward_std", "reward_min", "reward_max", "kl", "kl_coef", "policy_loss", "clip_frac",
           "approx_kl", "entropy", "first_minibatch_ratio_err", "value_loss", "value_clip_frac", "explained_variance",
           "advantage_mean", "advantage_std", "return_mean", "response_length_mean", "response_length_max",
           "truncated_share", "length_drift", "gen_tokens_per_s", "time_generate_s", "time_score_s",
           "time_reference_s", "time_values_s", "time_critic_s", "time_actor_s")


@pytest.fixture
def ppo_job(job, local_world):
    """``ppo_job(*overrides, **ppo)``: a full fine-tuning job (ZeRO-2, fp32, W&B off) on the bundled prompts with a
    method.ppo block (chinese_ratio rule, critic from the policy, 8 prompts, 12 new tokens, mini-batches of 4)."""

    def _job(*overrides: str, **ppo):
        composed = job("method=ppo", "data=sample_prompts", "strategy=zero2", "strategy.precision=fp32", "monitor=off",
                       "monitor.log_every=1", "optim.lr=1e-3", "optim.warmup_steps=0", "train.save_every=1000",
                       *overrides)
        settings = dict(rollout_batch=8, max_prompt_length=64, max_new_tokens=12, mini_batch=4, sample_every=1,
                        reward=RewardConfig(source="rule", rule="chinese_ratio"), critic_init="policy") | ppo
        composed.method.ppo = PpoConfig(**settings)
        composed.__post_init__()  # the job-level checks and sizes, as composing these settings would give
        return composed

    return _job


def train(job, run_dir, wrap=None):
    """Train ``job`` in ``run_dir`` on LocalRoles (wrapped by ``wrap``) → (state, the LocalRoles)."""
    from belle.recipes import ppo
    from belle.rlhf.local import LocalRoles

    roles = LocalRoles(job, run_dir)
    return ppo.train(job, run_dir, wrap(roles) if wrap else roles), roles


def metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


class Watch:
    """RoleCalls around LocalRoles: ``on(phase, calls)`` runs after each call of ``phase``, with the calls made so
    far of that phase."""

    def __init__(self, roles, phase: str, on):
        self.roles, self.phase, self.on, self.calls = roles, phase, on, 0

    def world(self, role: str) -> int:
        return self.roles.world(role)

    def sync_weights(self, version, bucket_mb, *, phase="sync"):
        return self.roles.sync_weights(version, bucket_mb, phase=phase)

    def call(self, role, method, shards=None, *, phase, **kwargs):
        results = self.roles.call(role, method, shards, phase=phase, **kwargs)
        if phase == self.phase:
            self.calls += 1
            self.on(self.calls)
        return results


def test_one_step_calls_the_roles_in_order_and_checkpoints_commit_last(ppo_job, tmp_path):
    run_dir = tmp_path / "run"
    pointer = run_dir / "checkpoints" / "latest"
    latest_at_save = []

    def seen(calls):  # while the roles save, latest still names the previous checkpoint
        latest_at_save.append(json.loads(pointer.read_text())["step"] if pointer.exists() else None)

    state, roles = train(ppo_job("train.max_steps=3", "train.save_every=2", "train.keep_last=1"), run_dir,
                         wrap=lambda roles: Watch(roles, "save", seen))
    assert roles.log == STEP_CALLS * 2 + SAVE_CALLS + STEP_CALLS + SAVE_CALLS + [("actor", "export", "export")]
    assert latest_at_save == [None, None, 2, 2]
    assert state["step"] == 3 and state["prompt_cursor"] == 24 and state["stopped"] is None

    checkpoints = run_dir / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["latest", "step-000003"]  # keep_last=1
    folder = checkpoints / "step-000003"
    for role in ("actor", "critic"):
        assert (folder / role / "rng-rank0.pt").is_file()
        assert (folder / role / "state" / "mp_rank_00_model_states.pt").is_file()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert "controller.json" in manifest and "actor/state/mp_rank_00_model_states.pt" in manifest
    assert (folder / "controller.json").stat().st_mtime_ns <= pointer.stat().st_mtime_ns
    controller = json.loads((folder / "controller.json").read_text())
    assert controller["step"] == 3 and controller["prompt_cursor"] == 24 and controller["epoch"] == 0
    assert controller["roles"]["actor"] == {"world": 1, "zero_stage": 2}
    assert controller["reward_moments"]["count"] == 24 and controller["kl_controller"] == {"coef": 0.2}

    lines = metrics(run_dir)
    assert [line["step"] for line in lines] == [1, 2, 3]
    for line in lines:
        assert set(METRICS) <= line.keys()
        assert line["first_minibatch_ratio_err"] < 1e-3  # dropout off: the first mini-batch replays the rollout
    assert lines[0]["kl"] == pytest.approx(0, abs=1e-6)  # the actor starts as its reference
    samples = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert [row["step"] for row in samples] == [1] * 4 + [2] * 4 + [3] * 4
    assert samples[0]["prompt"].endswith("\n\nAssistant: \n")
    assert (run_dir / "export" / "model.safetensors").is_file()


def test_a_resumed_run_continues_exactly_as_an_uninterrupted_one(ppo_job, tmp_path):
    job = ppo_job("train.max_steps=4", "optim.schedule=cosine", kl=KlConfig(coef=0.1, target=1.0, horizon=100),
                  epochs=2)
    train(job, tmp_path / "straight")

    # a stop request during step 2 (as SIGTERM/USR1 give): step 2 finishes, is saved, and the run returns
    stopped = tmp_path / "stopped"
    state, _ = train(job, stopped,
                     wrap=lambda roles: Watch(roles, "actor", lambda calls: calls == 2 and stop.request(stopped, "t")))
    assert state["step"] == 2 and stop.stopped_at(stopped) == 2
    assert not (stopped / "export").exists()
    state, _ = train(job, stopped)
    assert state["step"] == 4

    straight, resumed = metrics(tmp_path / "straight"), metrics(stopped)
    assert [line["step"] for line in resumed] == [1, 2, 3, 4]
    for expected, got in zip(straight[2:], resumed[2:], strict=True):
        for key, value in expected.items():
            if not key.startswith("time_") and key != "gen_tokens_per_s":
                assert got[key] == pytest.approx(value, abs=1e-5, nan_ok=True), (got["step"], key)
    assert straight[3]["kl_coef"] != 0.1  # the adaptive coefficient moved, and was restored exactly

    # resuming with another ZeRO stage is refused in one line naming the fix
    from belle.rlhf.local import LocalRoles

    with pytest.raises(ValueError, match=r"roles.actor saved on 1 ranks with ZeRO-2, but this run places it on 1 "
                                         r"ranks with ZeRO-3: place it as before \(roles.actor.zero_stage=2"):
        LocalRoles(ppo_job("train.max_steps=4", "strategy=zero3"), stopped)


def test_stop_kl_stops_with_a_checkpoint_and_says_why(ppo_job, tmp_path):
    state, roles = train(ppo_job("train.max_steps=5", stop_kl=1e-3), tmp_path)
    line = metrics(tmp_path)[-1]
    assert state["step"] == line["step"] == 2 and line["kl"] > 1e-3  # step 1's KL is 0: the actor is its reference
    assert state["stopped"] == f"KL {line['kl']:.3g} > method.ppo.stop_kl=0.001 at step 2"
    assert json.loads((tmp_path / "checkpoints" / "latest").read_text())["step"] == 2
    assert roles.log[-1] == ("actor", "export", "export")


def test_a_nan_loss_stops_the_run_in_one_line(ppo_job, tmp_path):
    def nan_values(roles):  # a critic whose values went NaN
        call = roles.call
        roles.call = lambda role, method, shards=None, *, phase, **kwargs: [
            result.fill_(math.nan) if phase == "values" else result
            for result in call(role, method, shards, phase=phase, **kwargs)]
        return roles

    with pytest.raises(RuntimeError, match=r"^the training loss is nan at optimizer step 1, before the learning rate"):
        train(ppo_job("train.max_steps=2"), tmp_path, wrap=nan_values)
    assert not (tmp_path / "checkpoints").exists()


def test_under_lora_the_actor_with_its_adapters_off_is_the_reference(ppo_job, tmp_path):
    state, roles = train(ppo_job("method=ppo_lora", "strategy=zero3", "train.max_steps=2"), tmp_path)
    assert roles.host.roles == ("actor", "critic")
    assert roles.log[:4] == [("actor", "generate", "generate"), ("actor", "log_probs", "log_probs"),
                             ("actor", "log_probs", "reference"), ("critic", "values", "values")]
    first, second = metrics(tmp_path)
    assert first["kl"] == pytest.approx(0, abs=1e-6) and second["kl"] != 0
    assert (tmp_path / "export" / "adapter").is_dir()


def test_the_plan_says_what_a_step_does(ppo_job):
    from belle.data.facts import DataFacts
    from belle.recipes.ppo import plan

    composed = ppo_job("cluster.cpu_workers_per_node=1", kl=KlConfig(target=6))
    planned = plan(composed, DataFacts(16, 20.0, "test"), [])
    lines = planned.recipe
    assert lines["kind"] == "driver" and lines["roles"] == ["actor", "critic", "reference"]
    assert "scores from rule chinese_ratio, KL k1 x 0.2, adaptive to 6" in lines["trains"]
    assert lines["step"] == ("8 prompts x 1, <= 64+12 tokens; mini-batch 4 x 1 epochs = 2 actor + 2 critic optimizer "
                             "steps")
    assert planned.lines[0] == f"  step       {lines['step']}" and planned.steps_per_epoch == 2


@pytest.mark.slow
def test_a_dense_rule_reward_rises_while_a_tiny_lr_control_stays_flat(ppo_job, tmp_path):
    """30 steps of 32 responses of 16 tokens; measured on 2 CPU cores (about 50 s): the learner's mean
    chinese_ratio of the last 5 steps 0.69 against 0.48 for the first 5, KL at most 10.9 nats per response; the
    control (lr 1e-7, 10 steps: its last 5 against its first 5, as many responses) moves by under 0.06, KL 0."""
    settings = dict(rollout_batch=32, max_new_tokens=16, mini_batch=8, kl=KlConfig(coef=0.1), sample_every=0)
    runs = {}
    for lr, steps in (("3e-3", 30), ("1e-7", 10)):
        train(ppo_job(f"train.max_steps={steps}", "optim.schedule=constant", f"optim.lr={lr}", **settings),
              tmp_path / lr)
        lines = metrics(tmp_path / lr)
        rewards = [line["reward_mean"] for line in lines]
        runs[lr] = (sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5, max(line["kl"] for line in lines))
    (first, last, kl), (control_first, control_last, control_kl) = runs["3e-3"], runs["1e-7"]
    assert last > first + 0.12, runs
    assert abs(control_last - control_first) < 0.06 and control_kl < 0.01, runs
    assert kl < 25, runs


def test_prompts_come_from_text_or_instruction_records(job, tmp_path):
    from belle.data.records import DataError
    from belle.data.template import ASSISTANT_PREFIX
    from belle.model.load import load_tokenizer
    from belle.rlhf.inputs import prompt_source

    composed, tokenizer = job(), load_tokenizer(job().model)
    composed.method.ppo = PpoConfig(max_prompt_length=8)
    composed.data.path = str(SAMPLES_DIR / "prompts.jsonl")
    prompts = prompt_source(composed, tokenizer)
    assert len(prompts) == 300 and all(p.text.endswith(ASSISTANT_PREFIX) and p.reference is None for p in prompts)
    first = prompts[0]
    assert first.ids == tokenizer.encode(first.text, add_special_tokens=False)[-8:]  # cut from the left

    composed.data.path = str(SAMPLES_DIR / "math.jsonl")
    math_prompt = prompt_source(composed, tokenizer)[0]
    assert math_prompt.text.startswith("Human: \n题目：") and math_prompt.text.endswith(ASSISTANT_PREFIX)
    assert math_prompt.reference.endswith("答案：68")

    bad = tmp_path / "bad.jsonl"
    for record, error in (('{"text": "Human: \\nhi"}', r"bad.jsonl:1: a prompt must end with"),
                          ('{"chosen": "a", "rejected": "b"}', r"bad.jsonl:1: a preference record, not a prompt")):
        bad.write_text(record + "\n")
        composed.data.path = str(bad)
        with pytest.raises(DataError, match=error):
            prompt_source(composed, tokenizer)


def test_the_prompt_order_is_global_reshuffled_per_epoch_and_resumable():
    from belle.data.prompts import PromptStream
    from belle.recipes.ppo import _rank_rows

    stream = PromptStream(10, seed=1)
    taken = stream.take(6) + stream.take(6) + stream.take(8)
    assert sorted(taken[:10]) == sorted(taken[10:]) == list(range(10)) and taken[:10] != taken[10:]
    resumed = PromptStream(10, seed=1, cursor=6)
    assert resumed.take(14) == taken[6:] and resumed.epoch == 2
    assert _rank_rows(5, 2) == [[0, 1, 2], [3, 4, 0]]  # equal shares; the padding row's results are dropped


def test_update_stats_merge_over_ranks():
    from belle.rlhf.batch import merge

    ranks = [{"tokens": 10.0, "policy_loss": 0.5, "clip_frac": 2.0, "max:first_minibatch_ratio_err": 1e-4},
             {"tokens": 30.0, "policy_loss": 0.7, "clip_frac": 6.0, "max:first_minibatch_ratio_err": 3e-4}]
    assert merge(ranks, minibatches=2) == pytest.approx(
        {"policy_loss": 0.6, "clip_frac": 0.2, "first_minibatch_ratio_err": 3e-4})
