"""How long to train, how often to log, evaluate and save, and where W&B goes."""

from dataclasses import dataclass

from belle.config._checks import one_of, positive, require

WANDB_MODES = ("auto", "online", "offline", "disabled")


@dataclass
class TrainConfig:
    epochs: float = 1.0
    """Passes over the training data."""
    max_steps: int | None = None
    """Stop after this many optimizer steps even if epochs are not done; None runs all epochs."""
    seed: int = 42
    """Seed for model init, data order and dropout."""
    eval_every: int = 0
    """Optimizer steps between eval losses; 0 evaluates only at the end."""
    eval_generate_every: int | None = None
    """Optimizer steps between scores of the eval section's set (answered by the model being trained, scored by its
    judge or rule: eval_score and eval_score_wo_others in the metrics, beside the loss); None: never. Needs an eval
    section (eval=sample); the items of each are in <run_dir>/eval-steps/step-N/."""
    save_every: int = 500
    """Optimizer steps between checkpoints; a final checkpoint is always saved."""
    keep_last: int = 2
    """Checkpoints kept on disk (older ones are deleted after a newer one is complete)."""
    max_failures: int = 0
    """Worker-group restarts from the last checkpoint before the run is declared failed."""
    hang_timeout_s: float | None = 600.0
    """Seconds without any rank finishing an optimizer step before the run counts as hung: every rank's stack is
    written to <run_dir>/hang/, the ranks are stopped and the group restarts (train.max_failures) or fails. Keep it
    below cluster.collective_timeout_s; None turns the watchdog off."""
    hang_first_step_s: float = 1800.0
    """The same allowance until an attempt's first step is done (model loading, compilation, the first gather)."""

    def __post_init__(self) -> None:
        positive("train.epochs", self.epochs, 1)
        if self.max_steps is not None:
            positive("train.max_steps", self.max_steps, "null")
        require(self.eval_every >= 0, f"train.eval_every={self.eval_every} must be >= 0")
        require(self.eval_generate_every is None or self.eval_generate_every > 0,
                f"train.eval_generate_every={self.eval_generate_every} must be > 0 (null: never): set "
                "train.eval_generate_every=100")
        positive("train.save_every", self.save_every, 500)
        positive("train.keep_last", self.keep_last, 2)
        require(self.max_failures >= 0, f"train.max_failures={self.max_failures} must be >= 0")
        if self.hang_timeout_s is not None:
            positive("train.hang_timeout_s", self.hang_timeout_s, 600)
        positive("train.hang_first_step_s", self.hang_first_step_s, 1800)


@dataclass
class MonitorConfig:
    log_every: int = 10
    """Optimizer steps between metric lines in metrics.jsonl and W&B."""
    wandb_mode: str = "auto"
    """auto (online when an API key is configured, else offline), online, offline or disabled."""
    wandb_project: str = "belle-launcher"
    """W&B project."""
    wandb_entity: str | None = None
    """W&B entity (team or user); None uses the key's default."""
    wandb_group: str | None = None
    """W&B group, e.g. the sweep name."""

    def __post_init__(self) -> None:
        positive("monitor.log_every", self.log_every, 10)
        one_of("monitor.wandb_mode", self.wandb_mode, WANDB_MODES)
