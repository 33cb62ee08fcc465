"""Where PPO's roles run: which roles share GPUs (a pool) and how many ranks each has; belle.rlhf.planner plans it."""

from dataclasses import dataclass, field

from belle.config._checks import one_of, positive, require
from belle.config.model import ModelConfig

LAYOUTS = ("colocate_all", "pairs", "separate", "custom", "auto")
NAMED_LAYOUTS = ("colocate_all", "pairs", "separate")
"""The layouts that derive every role's workers and pool from the cluster (auto tries them in this order)."""
ROLES = ("actor", "critic", "reference", "reward", "rollout")
TRAINED_ROLES = ("actor", "critic")
"""Roles with an optimizer, saved in every checkpoint."""
ENGINES = ("hf", "vllm")


@dataclass
class RoleConfig:
    workers: int | None = None
    """Ranks of the role, one per GPU (or CPU worker); 0: the role is absent; None: derived by roles.layout
    (roles.layout=custom needs it)."""
    pool: str | None = None
    """Roles with the same pool share the same GPUs, hosted by one process per GPU; None: derived by roles.layout
    (roles.layout=custom needs it)."""
    zero_stage: int | None = None
    """DeepSpeed ZeRO stage; None: a trained role follows strategy.zero_stage, a frozen one uses 3 if that is 3,
    else 0."""
    offload: bool = False
    """Keep the role's model states in CPU memory (ZeRO-3: parameters and optimizer; ZeRO 1-2: optimizer)."""
    micro_batch: int = 4
    """Sequences per forward (and backward) pass of the role."""
    model: ModelConfig | None = None
    """The role's model; None: the job's ``model`` (the reward model's comes from ``/model@roles.reward.model``)."""

    def check(self, key: str) -> None:
        """The block's own checks; ``key`` is its config path, e.g. ``roles.actor``."""
        require(
            self.workers is None or self.workers >= 0,
            f"{key}.workers={self.workers} must be >= 0 (0: no {key.rpartition('.')[2]}): set {key}.workers=1",
        )
        require(self.pool is None or bool(self.pool.strip()), f"{key}.pool is empty: set {key}.pool=<pool name>")
        if self.zero_stage is not None:
            one_of(f"{key}.zero_stage", self.zero_stage, (0, 1, 2, 3))
        require(
            not (self.offload and self.zero_stage == 0),
            f"{key}.offload=true needs ZeRO 1-3: set {key}.zero_stage=3",
        )
        positive(f"{key}.micro_batch", self.micro_batch, 4)


@dataclass
class RolloutConfig(RoleConfig):
    micro_batch: int = 16
    """Sequences each rollout worker generates at once (its KV cache holds them all)."""
    engine: str = "hf"
    """hf (transformers generate: in the actor's pool, or a pool of its own) or vllm (GPU only, a pool of its own)."""
    gather_weights: bool = True
    """hf in the actor's pool: gather the whole ZeRO-3 model once per rollout (fast, costs the 16-bit weights per
    GPU); false gathers layer by layer at every token (slow, lean)."""
    tensor_parallel: int = 1
    """vllm: GPUs per engine; must divide the rollout's workers."""
    gpu_memory_utilization: float = 0.9
    """vllm: share of each rollout GPU's memory the engine takes (weights plus KV cache)."""
    sync_bucket_mb: int = 512
    """A separate rollout pool: MB of weights the actor's rank 0 broadcasts per bucket (one Ray call each)."""

    def check(self, key: str) -> None:
        super().check(key)
        for name in ("zero_stage", "model"):
            require(
                getattr(self, name) is None,
                f"{key}.{name} is not used: the rollout generates with the actor's weights; remove it",
            )
        require(not self.offload, f"{key}.offload is not used: the rollout holds no optimizer; remove it")
        one_of(f"{key}.engine", self.engine, ENGINES)
        positive(f"{key}.tensor_parallel", self.tensor_parallel, 1)
        require(
            self.tensor_parallel == 1 or self.engine == "vllm",
            f"{key}.tensor_parallel={self.tensor_parallel} needs {key}.engine=vllm (hf generates data-parallel): "
            f"set {key}.tensor_parallel=1",
        )
        require(
            self.workers is None or self.workers % self.tensor_parallel == 0,
            f"{key}.tensor_parallel={self.tensor_parallel} does not divide {key}.workers={self.workers}: set "
            f"{key}.workers to a multiple of it",
        )
        require(
            0 < self.gpu_memory_utilization <= 1,
            f"{key}.gpu_memory_utilization={self.gpu_memory_utilization} must be in (0, 1]: "
            f"set {key}.gpu_memory_utilization=0.9",
        )
        positive(f"{key}.sync_bucket_mb", self.sync_bucket_mb, 512)


@dataclass
class RolesConfig:
    layout: str = "colocate_all"
    """colocate_all (every role on every GPU), pairs (actor+reference, critic+reward), separate (a pool per role),
    custom (every role's workers and pool set by hand) or auto (the first of colocate_all, pairs, separate whose
    memory fits)."""
    check_memory: bool = True
    """Refuse a placement whose estimated memory per GPU exceeds the GPU's."""
    actor: RoleConfig = field(default_factory=RoleConfig)
    """The policy being trained."""
    critic: RoleConfig = field(default_factory=RoleConfig)
    """The value model being trained (a score model)."""
    reference: RoleConfig = field(default_factory=lambda: RoleConfig(micro_batch=8))
    """The frozen initial policy for the KL penalty (absent under LoRA: the actor with adapters off serves)."""
    reward: RoleConfig = field(default_factory=lambda: RoleConfig(micro_batch=8))
    """The frozen reward model (absent with a rule reward)."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    """The generator of responses."""

    def block(self, role: str) -> RoleConfig:
        """The config block of ``role`` (one of ROLES)."""
        return getattr(self, role)

    def __post_init__(self) -> None:
        one_of("roles.layout", self.layout, LAYOUTS)
        for role in ROLES:
            block = self.block(role)
            block.check(f"roles.{role}")
            for name in ("workers", "pool"):
                value = getattr(block, name)
                require(
                    value is None or self.layout == "custom",
                    f"roles.{role}.{name}={value} is derived by roles.layout={self.layout}: remove it, or set "
                    "roles.layout=custom and place every role by hand",
                )
