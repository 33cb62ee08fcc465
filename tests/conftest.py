"""Shared fixtures: jobs composed in-process as the CLI does; caches and temp files inside pytest's tmp dirs."""

import os
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from launcher.compose import to_job
from launcher.store import register

sys.path.insert(0, str(Path(__file__).parent))  # tests/distributed.py: the multi-process harness


@pytest.fixture(autouse=True, scope="session")
def _private_caches(tmp_path_factory):
    """The tiny tokenizer cache, prepared data and DeepSpeed's compiled ops live in this session's tmp dir (unless
    TORCH_EXTENSIONS_DIR names a warm cache), never in the user's home."""
    os.environ["BELLE_CACHE"] = str(tmp_path_factory.mktemp("belle-cache"))
    os.environ["BELLE_HOME"] = str(tmp_path_factory.mktemp("belle-home"))  # prepared data (data.cache_dir), job records
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(tmp_path_factory.mktemp("torch-extensions")))


@pytest.fixture
def workers_env(tmp_path, monkeypatch):
    """For tests that start worker processes: their temp files inside tmp_path, one thread each, and the tiny
    tokenizer built here first so the workers only read it."""
    from belle.model.tokenizer import tiny_tokenizer

    (tmp_path / "tmp").mkdir(exist_ok=True)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    tiny_tokenizer()


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


@pytest.fixture
def train_recipe(job, tmp_path, workers_env):
    """``train_recipe(*overrides, name=…)`` trains a recipe for real without Ray: composes the job (W&B off and no
    checkpoint unless the overrides say otherwise), prepares its data as the launcher does, trains it on 2 spawned
    CPU workers of one gloo world and returns (job, run dir)."""
    from distributed import spawn

    from belle.data.prepare import prepare
    from belle.model.load import load_tokenizer
    from belle.recipes import recipe

    def _train(*overrides: str, name: str = "run"):
        composed = job("monitor=off", "train.save_every=1000", *overrides)
        prepare(composed.data, load_tokenizer(composed.model), processes=1)
        run_dir = tmp_path / name
        run_dir.mkdir()
        spawn(recipe(composed.method.name).train, composed, str(run_dir), world=2)
        return composed, run_dir

    return _train


@pytest.fixture
def local_world(workers_env, monkeypatch):
    """For tests that build PPO roles in this process (a RoleHost of a world of one): its rendezvous variables, one
    torch thread and the torch.distributed world are undone afterwards."""
    import deepspeed
    import torch

    for key in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    if torch.distributed.is_initialized():
        deepspeed.comm.destroy_process_group()


@pytest.fixture(autouse=True)
def _default_dtype():
    """A test that leaves torch's default dtype changed fails (and the next test starts from float32 again): a
    leaked bfloat16 default silently makes later tests' plain torch modules bf16."""
    import torch

    yield
    leaked = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    assert leaked == torch.float32, f"the test left torch's default dtype at {leaked}"
