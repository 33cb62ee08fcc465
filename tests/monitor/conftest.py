"""W&B stays offline and inside the test's tmp dir; its service process is stopped after each test."""

import pytest


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """No key, no netrc, every W&B dir under tmp_path; wandb.teardown() afterwards."""
    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_MODE", "WANDB_BASE_URL", "WANDB_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    dirs = {
        "WANDB_DIR": "wandb",
        "WANDB_CONFIG_DIR": "config",
        "WANDB_CACHE_DIR": "cache",
        "WANDB_DATA_DIR": "data",
        "TMPDIR": "tmp",
    }
    for name, sub in dirs.items():
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(name, str(tmp_path / sub))
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    yield tmp_path
    import wandb

    wandb.teardown()
