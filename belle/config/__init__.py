"""Typed configuration of a job. Every group is a dataclass whose ``__post_init__`` checks its own fields."""

from belle.config.cluster import ClusterConfig
from belle.config.data import DataConfig
from belle.config.job import JobConfig, LauncherConfig, ReferenceConfig, job_dict
from belle.config.method import LoraConfig, MethodConfig
from belle.config.model import ModelConfig
from belle.config.optim import OptimConfig
from belle.config.run import MonitorConfig, TrainConfig
from belle.config.strategy import StrategyConfig

__all__ = [
    "ClusterConfig",
    "DataConfig",
    "JobConfig",
    "LauncherConfig",
    "LoraConfig",
    "MethodConfig",
    "ModelConfig",
    "MonitorConfig",
    "OptimConfig",
    "ReferenceConfig",
    "StrategyConfig",
    "TrainConfig",
    "job_dict",
]
