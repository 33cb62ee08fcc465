"""The whole job: one typed section per config group, composed by Hydra from conf/."""

from dataclasses import dataclass, field

from omegaconf import MISSING

from belle.config._checks import require
from belle.config.cluster import ClusterConfig
from belle.config.data import DataConfig
from belle.config.method import MethodConfig
from belle.config.model import ModelConfig
from belle.config.optim import OptimConfig
from belle.config.run import MonitorConfig, TrainConfig
from belle.config.strategy import StrategyConfig


@dataclass
class LauncherConfig:
    name: str = "demo"
    """Run name; also names the default run directory."""
    run_dir: str = "runs/${launcher.name}"
    """Run directory (relative paths are under the directory the command was started in); reusing it resumes."""
    dry_run: bool = False
    """Validate and write plan.json + config.yaml, start nothing."""
    preview: int = 0
    """Render this many training samples as the model sees them (preview.jsonl), start nothing."""
    prepare: bool = False
    """Prepare the data cache (check, tokenize, pack; see data.cache_dir), print its numbers, train nothing."""

    @property
    def launches(self) -> bool:
        """Whether this command starts training (neither a dry run, a preview nor a prepare)."""
        return not self.dry_run and not self.preview and not self.prepare

    def __post_init__(self) -> None:
        require(bool(self.name.strip()), "launcher.name is empty: set launcher.name=<run name>")
        require(self.preview >= 0, f"launcher.preview={self.preview} must be >= 0: set launcher.preview=5")


@dataclass
class ReferenceConfig:
    hours_per_epoch: float | None = None
    """Hours per epoch the paper reports for this experiment, shown next to the plan's estimate."""
    hardware: str | None = None
    """Hardware of that measurement, e.g. 8xA100-40GB."""
    source: str | None = None
    """Where the number comes from."""


@dataclass
class JobConfig:
    model: ModelConfig = MISSING
    data: DataConfig = MISSING
    method: MethodConfig = field(default_factory=MethodConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)


def job_dict(job: JobConfig) -> dict:
    """Plain, fully resolved dict of a job (what config.yaml and the W&B config hold)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.structured(job), resolve=True)
