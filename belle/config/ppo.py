"""PPO's settings (``method.ppo``): generation, updates, the KL penalty, the reward and the critic, run control."""

import math
from dataclasses import dataclass, field

from belle.config._checks import one_of, positive, require
from belle.config.model import ModelConfig
from belle.config.paths import path_field
from belle.config.roles import TRAINED_ROLES, RolesConfig

KL_ESTIMATORS = ("k1", "k2", "k3")
"""belle.rlhf.ppo_losses.KL_ESTIMATORS (kept here so the config imports no torch)."""
REWARD_SOURCES = ("model", "rule")
REWARD_RULES = ("math_answer", "chinese_ratio", "length_target", "math_final", "exact_match")
"""belle.score.rules.RULES by name."""
CRITIC_INITS = ("reward", "policy")
KL_ERROR_CLIP = 0.2
"""The adaptive KL controller clips its relative error KL / target − 1 to ±KL_ERROR_CLIP (belle.rlhf.ppo_losses)."""


@dataclass
class KlConfig:
    coef: float = 0.2
    """β of the per-token penalty −β·KL(policy ‖ reference) (BELLE: 0.2, adaptive); the start value when adaptive."""
    estimator: str = "k1"
    """Per-token KL estimate: k1 (log-ratio), k2 (½ log-ratio²) or k3 (never negative)."""
    target: float | None = None
    """KL per response the adaptive controller steers towards; None keeps ``coef`` fixed."""
    horizon: int = 10000
    """Samples over which the adaptive controller corrects its error; at least the sequences of one PPO step, so one
    update moves the coefficient by at most ±KL_ERROR_CLIP of itself."""

    def __post_init__(self) -> None:
        require(math.isfinite(self.coef) and self.coef >= 0,
                f"method.ppo.kl.coef={self.coef} must be >= 0: set method.ppo.kl.coef=0.2")
        one_of("method.ppo.kl.estimator", self.estimator, KL_ESTIMATORS)
        if self.target is not None:
            positive("method.ppo.kl.target", self.target, 6)
            require(self.coef > 0,
                    f"method.ppo.kl.coef=0 with method.ppo.kl.target={self.target:g} stays 0 for good (the adaptive "
                    "controller multiplies the coefficient): set method.ppo.kl.coef=0.2, or method.ppo.kl.target=null "
                    "for no KL penalty")
        positive("method.ppo.kl.horizon", self.horizon, 10000)

    def check_horizon(self, sequences: int) -> None:
        """An adaptive controller updated with ``sequences`` samples per step multiplies the coefficient by
        1 + err · sequences / horizon with |err| ≤ KL_ERROR_CLIP: a horizon under the sequences per step lets one
        update move it by more than ±KL_ERROR_CLIP, and under a fifth of them turn it negative (a KL bonus)."""
        worst = 1 - KL_ERROR_CLIP * sequences / self.horizon
        require(
            self.target is None or self.horizon >= sequences,
            f"method.ppo.kl.horizon={self.horizon} is shorter than the {sequences} sequences of one PPO step: one "
            f"update could multiply method.ppo.kl.coef by as little as {worst:.3g} "
            f"(0 or less turns the KL penalty into a bonus): set method.ppo.kl.horizon={sequences} or more "
            "(default 10000)",
        )


@dataclass
class RewardConfig:
    source: str = "model"
    """model (the reward model of roles.reward, scored on token ids) or rule (``rule`` on the decoded text)."""
    rule: str | None = None
    """source=rule: math_answer, chinese_ratio or length_target (belle.score.rules)."""
    normalize: bool = True
    """Centre and scale each score by the running mean and std of every score so far (kept in checkpoints)."""
    clip: float = 5.0
    """Scores are clipped to ±clip after normalising."""
    missing_eos_penalty: float = 0.0
    """Subtracted from the score of a response cut at max_new_tokens without an EOS."""

    def __post_init__(self) -> None:
        one_of("method.ppo.reward.source", self.source, REWARD_SOURCES)
        if self.source == "rule":
            require(self.rule is not None,
                    f"method.ppo.reward.source=rule needs a rule: set method.ppo.reward.rule=<one of "
                    f"{', '.join(REWARD_RULES)}>")
            one_of("method.ppo.reward.rule", self.rule, REWARD_RULES)
        else:
            require(self.rule is None,
                    f"method.ppo.reward.rule={self.rule} is only read with a rule reward: set "
                    "method.ppo.reward.source=rule, or method.ppo.reward.rule=null")
        positive("method.ppo.reward.clip", self.clip, 5)
        require(math.isfinite(self.missing_eos_penalty) and self.missing_eos_penalty >= 0,
                f"method.ppo.reward.missing_eos_penalty={self.missing_eos_penalty} must be >= 0: set "
                "method.ppo.reward.missing_eos_penalty=0")


@dataclass
class PpoConfig:
    rollout_batch: int | None = None
    """Prompts per PPO step; None: strategy.global_batch / samples_per_prompt (so strategy.global_batch is the
    sequences per step)."""
    samples_per_prompt: int = 1
    """Responses sampled for each prompt."""
    max_prompt_length: int | None = None
    """Prompt tokens kept (cut from the left); None: half of data.max_length."""
    max_new_tokens: int | None = None
    """Response tokens generated at most (a response that reaches it without EOS counts as truncated); None: the
    other half of data.max_length."""
    temperature: float = 1.0
    """Sampling temperature (the log-probs are computed at the same temperature)."""
    top_p: float = 1.0
    """Nucleus sampling share."""
    mini_batch: int | None = None
    """Sequences per optimizer step of the actor and of the critic; None: roles.actor.micro_batch x
    cluster.world_size (one micro-batch per rank when every role is on every worker)."""
    epochs: int = 1
    """Passes over each step's sequences, reshuffled into mini-batches every pass."""
    clip: float = 0.2
    """PPO ratio clip ε: the ratio counts within [1 − ε, 1 + ε]."""
    value_clip: float = 0.2
    """The critic's new values count within ±value_clip of the values at rollout time."""
    gamma: float = 1.0
    """Discount per response token."""
    lam: float = 0.95
    """GAE λ."""
    whiten_advantages: bool = True
    """Scale the advantages to mean 0 and std 1 over each step's tokens."""
    kl: KlConfig = field(default_factory=KlConfig)
    """The KL penalty against the reference policy."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """Where scores come from and how they are shaped."""
    critic_init: str = "reward"
    """The critic starts from the reward model (reward) or from the policy with a fresh value head (policy)."""
    critic_lr: float | None = None
    """The critic's peak learning rate; None: optim.lr."""
    critic_warmup_steps: int = 0
    """PPO steps at the start that train only the critic."""
    stop_kl: float | None = None
    """Stop cleanly (checkpoint, summary) once the KL per response exceeds it; None never stops for KL."""
    phase_timeout_s: float = 1800.0
    """Seconds one phase (generate, score, update, save…) may take on every rank before the run counts as hung."""
    sample_every: int = 10
    """PPO steps between rows in samples.jsonl (prompt, response, score); 0 writes none."""
    reward_model: str | None = path_field(None)
    """The reward model's folder (an RM export, e.g. runs/rm_7b/export) when reward.source=model; None is allowed
    only with model.path=null (a model built from its architecture numbers, as +smoke=tiny does): the reward model is
    then that architecture with a fresh score head. roles.reward.model names another architecture."""

    @property
    def sequences(self) -> int:
        """Sequences generated per step: rollout_batch × samples_per_prompt."""
        return self.rollout_batch * self.samples_per_prompt

    def check_lengths(self, model: ModelConfig) -> None:
        """Prompt and response fit the model's positions."""
        require(
            self.max_prompt_length + self.max_new_tokens <= model.max_position_embeddings,
            f"method.ppo.max_prompt_length={self.max_prompt_length} + max_new_tokens={self.max_new_tokens} exceeds "
            f"model.max_position_embeddings={model.max_position_embeddings} of {model.name}: set "
            f"method.ppo.max_new_tokens={max(1, model.max_position_embeddings - self.max_prompt_length)}",
        )

    def check_batches(self, workers: int, micro_batch: int, key: str) -> None:
        """For one trained role (``key``: its config path, e.g. roles.actor): every rank runs as many
        micro-batches per mini-batch, so mini_batch must be divisible by its workers × its micro_batch."""
        per_pass = workers * micro_batch
        if self.mini_batch % per_pass == 0:
            return
        fixes = [f"method.ppo.mini_batch={max(1, round(self.mini_batch / per_pass)) * per_pass}"]
        if self.mini_batch % workers == 0:
            per_rank = self.mini_batch // workers
            fixes.append(f"{key}.micro_batch={max(m for m in range(1, micro_batch) if per_rank % m == 0)}")
        raise ValueError(
            f"method.ppo.mini_batch={self.mini_batch} is not divisible by {workers} {key.rpartition('.')[2]} workers "
            f"× {key}.micro_batch={micro_batch}: set {' or '.join(fixes)}"
        )

    def __post_init__(self) -> None:
        for key, default in (("samples_per_prompt", 1), ("epochs", 1), ("clip", 0.2), ("value_clip", 0.2),
                             ("temperature", 1.0), ("phase_timeout_s", 1800)):
            positive(f"method.ppo.{key}", getattr(self, key), default)
        for key, default in (("rollout_batch", 32), ("max_prompt_length", 512), ("max_new_tokens", 512),
                             ("mini_batch", 8)):
            if getattr(self, key) is not None:
                positive(f"method.ppo.{key}", getattr(self, key), default)
        require(0 < self.top_p <= 1, f"method.ppo.top_p={self.top_p} must be in (0, 1]: set method.ppo.top_p=1.0")
        require(0 < self.gamma <= 1, f"method.ppo.gamma={self.gamma} must be in (0, 1]: set method.ppo.gamma=1")
        require(0 <= self.lam <= 1, f"method.ppo.lam={self.lam} must be in [0, 1]: set method.ppo.lam=0.95")
        one_of("method.ppo.critic_init", self.critic_init, CRITIC_INITS)
        require(
            not (self.critic_init == "reward" and self.reward.source == "rule"),
            "method.ppo.critic_init=reward needs a reward model, but method.ppo.reward.source=rule: set "
            "method.ppo.critic_init=policy",
        )
        require(
            self.reward_model is None or self.reward.source == "model",
            f"method.ppo.reward_model={self.reward_model} is only read with reward.source=model: set "
            "method.ppo.reward_model=null",
        )
        if self.critic_lr is not None:
            positive("method.ppo.critic_lr", self.critic_lr, "1e-5")
        require(self.critic_warmup_steps >= 0,
                f"method.ppo.critic_warmup_steps={self.critic_warmup_steps} must be >= 0: set "
                "method.ppo.critic_warmup_steps=0")
        if self.stop_kl is not None:
            positive("method.ppo.stop_kl", self.stop_kl, 10)
        require(self.sample_every >= 0,
                f"method.ppo.sample_every={self.sample_every} must be >= 0: set method.ppo.sample_every=10")

    def resolve(self, global_batch: int, max_length: int, actor_micro_batch: int, world_size: int) -> None:
        """Fill the sizes left None from the job (strategy.global_batch, data.max_length, roles.actor.micro_batch,
        cluster.world_size), then check what depends on them (called by JobConfig, so config.yaml records them)."""
        if self.rollout_batch is None:
            require(global_batch % self.samples_per_prompt == 0,
                    f"strategy.global_batch={global_batch} sequences per PPO step is not divisible by "
                    f"method.ppo.samples_per_prompt={self.samples_per_prompt}: set strategy.global_batch="
                    f"{max(1, global_batch // self.samples_per_prompt) * self.samples_per_prompt}")
            self.rollout_batch = global_batch // self.samples_per_prompt
        if self.max_prompt_length is None:
            self.max_prompt_length = max(1, max_length // 2)
        if self.max_new_tokens is None:
            self.max_new_tokens = max(1, max_length - self.max_prompt_length)
        if self.mini_batch is None:
            self.mini_batch = min(actor_micro_batch * world_size, self.sequences)
        require(
            self.sequences % self.mini_batch == 0,
            f"method.ppo.rollout_batch={self.rollout_batch} × samples_per_prompt={self.samples_per_prompt} = "
            f"{self.sequences} sequences per step is not divisible by method.ppo.mini_batch={self.mini_batch}: set "
            f"method.ppo.mini_batch={math.gcd(self.sequences, self.mini_batch)}",
        )
        require(
            self.sequences >= 2 or not (self.reward.normalize or self.whiten_advantages),
            "method.ppo.reward.normalize and whiten_advantages need 2 or more sequences per step: set "
            "method.ppo.rollout_batch=2 or higher",
        )
        self.kl.check_horizon(self.sequences)




def ppo_settings(job) -> PpoConfig:
    """The job's ``method.ppo`` block."""
    require(job.method.ppo is not None, "the job has no method.ppo block: set method=ppo")
    return job.method.ppo


def roles_settings(job) -> RolesConfig:
    """The job's ``roles`` group (a PPO job always has one: JobConfig fills in the default colocate_all)."""
    return job.roles


def present_roles(job) -> tuple[str, ...]:
    """The roles a PPO job runs: actor and critic; the reference under full fine-tuning (with LoRA the actor with its
    adapters off serves); the reward model unless a rule scores the responses."""
    extra = (("reference",) if job.method.lora is None else ()) + (
        ("reward",) if ppo_settings(job).reward.source == "model" else ())
    return TRAINED_ROLES + extra


def zero_stage(job, role: str) -> int:
    """The ZeRO stage of ``role``: its own, else strategy.zero_stage for a trained role, and for a frozen one 3 when
    that is 3, else 0."""
    own = roles_settings(job).block(role).zero_stage
    if own is not None:
        return own
    stage = job.strategy.zero_stage
    return stage if role in TRAINED_ROLES or stage == 3 else 0


def role_model(job, role: str) -> ModelConfig:
    """The model of ``role``: its own (roles.<role>.model), else the reward model for the reward role and for the
    critic under critic_init=reward (roles.reward.model, else the job's architecture loaded from
    method.ppo.reward_model), else the job's."""
    return role_model_source(job, role)[0]


def role_model_source(job, role: str) -> tuple[ModelConfig, str]:
    """``role_model`` and the setting that names its folder (e.g. ``method.ppo.reward_model``)."""
    from dataclasses import replace

    roles, ppo = roles_settings(job), ppo_settings(job)
    own = roles.block(role).model
    if own is not None:
        return own, f"roles.{role}.model.path"
    if scores_from_reward_model(job, role):
        if roles.reward.model is not None:
            return roles.reward.model, "roles.reward.model.path"
        model = replace(job.model, path=ppo.reward_model, tokenizer_path=job.model.tokenizer_path or job.model.path)
        return model, "method.ppo.reward_model"
    return job.model, "model.path"


def scores_from_reward_model(job, role: str) -> bool:
    """Whether ``role`` starts from a reward model (a sequence-classification folder with a trained score head): the
    reward role, and the critic under critic_init=reward."""
    return role == "reward" or (role == "critic" and ppo_settings(job).critic_init == "reward")


def frozen_roles(job) -> tuple[str, ...]:
    """The present roles no checkpoint holds (reference, reward): a resume reloads them from their folders."""
    return tuple(role for role in present_roles(job) if role not in TRAINED_ROLES)


def missing_reward_model(job) -> str | None:
    """Why the job cannot launch for want of a reward model (its roles need one, none is named, and the policy is
    loaded from a folder, so a fresh score head would be meaningless), or None."""
    roles, ppo = roles_settings(job), ppo_settings(job)
    needed = ppo.reward.source == "model" or ppo.critic_init == "reward"
    if needed and roles.reward.model is None and ppo.reward_model is None and job.model.path is not None:
        return ("PPO scores with a reward model but none is named: set method.ppo.reward_model=<a reward model's "
                "export folder, e.g. runs/rm_7b/export>")
    return None
