"""W&B offline: one run per job under run_dir/wandb, the same id after a resume, no secret in its config."""

import pytest

from belle.config.run import MonitorConfig
from belle.monitor.wandb_run import has_wandb_key, resolve_mode, start_wandb


def _offline_runs(run_dir):
    return sorted((run_dir / "wandb").glob("offline-run-*"))


def test_offline_run_then_resume_keeps_the_id(wandb_env, capsys):
    run_dir = wandb_env / "run"
    config = {"optim": {"lr": 1e-4}, "monitor": {"api_key": "sk-not-for-wandb"}}
    run = start_wandb(MonitorConfig(wandb_group="sweep"), run_dir, "demo", config, resume_step=None)
    for step in (1, 2, 3):
        run.log({"step": step, "loss": 1.0 / step, "mfu": None}, step=step)
    run.finish(0)

    run_id = (run_dir / "wandb_id").read_text().strip()
    (first,) = _offline_runs(run_dir)
    assert first.name.endswith(run_id)
    assert f"wandb sync {first}\n" in capsys.readouterr().out
    # what the run was given has the secret redacted, and no file W&B wrote holds it (wandb 0.31 keeps an offline
    # run's config only in its binary transaction log, flushed by wandb-core in its own time: no positive check)
    assert run.run.config["monitor"]["api_key"] == "<redacted>" and run.run.config["optim"]["lr"] == 1e-4
    assert all(b"sk-not-for-wandb" not in f.read_bytes() for f in (run_dir / "wandb").rglob("*") if f.is_file())

    again = start_wandb(MonitorConfig(), run_dir, "demo", config, resume_step=2)
    assert again.run.id == run_id
    again.log({"step": 3, "loss": 0.3}, step=3)
    again.finish(0)
    assert (run_dir / "wandb_id").read_text().strip() == run_id
    # a resumed offline run gets a second folder with the same id (…-<id>-1 when the timestamps match)
    second = next(p for p in _offline_runs(run_dir) if p != first)
    assert f"-{run_id}" in second.name and (second / f"run-{run_id}.wandb").is_file()
    assert " ".join(map(str, _offline_runs(run_dir))) in capsys.readouterr().out


def test_disabled_is_none(wandb_env):
    assert start_wandb(MonitorConfig(wandb_mode="disabled"), wandb_env / "run", "x", {}, None) is None
    assert not (wandb_env / "run").exists()


def test_auto_mode_follows_the_key(wandb_env, monkeypatch):
    assert not has_wandb_key() and resolve_mode("auto") == "offline"
    (wandb_env / "netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "a" * 40 + "\n")
    assert has_wandb_key() and resolve_mode("auto") == "online"
    (wandb_env / "netrc").unlink()
    monkeypatch.setenv("WANDB_API_KEY", "b" * 40)
    assert resolve_mode("auto") == "online" and resolve_mode("offline") == "offline"


@pytest.mark.parametrize(
    ("exported", "mode"), [("offline", "offline"), ("disabled", "disabled"), ("dryrun", "offline")]
)
def test_auto_honours_the_exported_wandb_mode(monkeypatch, exported, mode):
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_MODE", exported)
    assert resolve_mode("auto") == mode


def test_a_key_of_the_wrong_shape_is_refused_before_launch(monkeypatch):
    from belle.monitor.wandb_run import check_wandb_key

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "abc123")
    with pytest.raises(ValueError, match="WANDB_API_KEY has 6 characters, not a W&B API key"):
        check_wandb_key("auto")
    check_wandb_key("offline")  # not used: no complaint
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    check_wandb_key("online")


def test_the_printed_sync_command_survives_a_space_in_the_run_dir(wandb_env, capsys):
    import shlex

    run = start_wandb(MonitorConfig(wandb_mode="offline"), wandb_env / "my run", "demo", {}, resume_step=None)
    run.finish(0)
    line = next(line for line in capsys.readouterr().out.splitlines() if "wandb sync" in line)
    assert shlex.split(line.split(": ", 1)[1])[2:] == [str(p) for p in _offline_runs(wandb_env / "my run")]
