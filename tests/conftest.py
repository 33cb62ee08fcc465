"""Shared fixtures: jobs composed in-process as the CLI does; caches and temp files inside pytest's tmp dirs."""

import os

import pytest
from hydra import compose, initialize_config_module

from launcher.compose import to_job
from launcher.store import register


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """The tiny tokenizer cache lives in this session's tmp dir, never in the user's home."""
    os.environ["BELLE_CACHE"] = str(tmp_path_factory.mktemp("belle-cache"))


@pytest.fixture
def cfg():
    """compose(overrides) → the composed DictConfig, exactly as ``python -m launcher`` sees it."""
    register()

    def _compose(*overrides: str):
        with initialize_config_module(config_module="launcher.conf", version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))

    return _compose


@pytest.fixture
def job(cfg):
    """compose(overrides) → the typed, checked JobConfig."""
    return lambda *overrides: to_job(cfg(*overrides))
