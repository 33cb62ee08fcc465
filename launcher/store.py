"""Registers the typed schema and the resolvers the YAML tree uses. Import-cheap: no torch, no ray."""

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from belle.config import JobConfig
from belle.data.records import SAMPLES_DIR


def bundled(name: str) -> str:
    """``${bundled:instruction.jsonl}``: absolute path of a bundled sample file."""
    return str(SAMPLES_DIR / name)


def register() -> None:
    """Make ``job_schema`` (the typed root every conf/ file merges into) and ``${bundled:…}`` known to Hydra."""
    ConfigStore.instance().store(name="job_schema", node=JobConfig)
    if not OmegaConf.has_resolver("bundled"):
        OmegaConf.register_new_resolver("bundled", bundled)
