"""Optimizer and learning-rate schedule."""

from dataclasses import dataclass

from belle.config._checks import one_of, positive, require

SCHEDULES = ("cosine", "linear", "constant")


@dataclass
class OptimConfig:
    lr: float = 2e-4
    """Peak learning rate (BELLE: 2e-4 LoRA, 5e-6 full fine-tune, 5e-7 math continuation)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.999
    """AdamW beta2."""
    eps: float = 1e-8
    """AdamW epsilon."""
    schedule: str = "cosine"
    """Decay after warmup: cosine, linear or constant."""
    warmup_steps: int = 0
    """Linear warmup in optimizer steps; set this or warmup_ratio, not both."""
    warmup_ratio: float = 0.0
    """Linear warmup as a share of all optimizer steps."""
    min_lr_ratio: float = 0.0
    """Floor of the decay as a share of lr."""

    def __post_init__(self) -> None:
        positive("optim.lr", self.lr, "2e-4")
        one_of("optim.schedule", self.schedule, SCHEDULES)
        require(
            self.weight_decay >= 0, f"optim.weight_decay={self.weight_decay} must be >= 0: set optim.weight_decay=0"
        )
        for name, value, default in (("beta1", self.beta1, 0.9), ("beta2", self.beta2, 0.999)):
            require(0 <= value < 1, f"optim.{name}={value} must be in [0, 1): set optim.{name}={default}")
        require(
            self.warmup_steps >= 0, f"optim.warmup_steps={self.warmup_steps} must be >= 0: set optim.warmup_steps=0"
        )
        require(
            0 <= self.warmup_ratio < 1,
            f"optim.warmup_ratio={self.warmup_ratio} must be in [0, 1): set optim.warmup_ratio=0.03",
        )
        require(
            not (self.warmup_steps and self.warmup_ratio),
            f"optim.warmup_steps={self.warmup_steps} and optim.warmup_ratio={self.warmup_ratio} are both set: "
            "set one of them to 0",
        )
        require(0 <= self.min_lr_ratio <= 1, f"optim.min_lr_ratio={self.min_lr_ratio} must be in [0, 1]")
