"""Paths are made absolute once, at compose time, so config.yaml names files every process reads (Ray workers
and Slurm jobs run in directories of their own); one launcher runs a run directory at a time; a launch refused for
bad input leaves the run directory as it was. The real launch joins a user's Ray cluster, and a local sweep runs
beside it."""

import errno
import json
import os
import socket
import time
from pathlib import Path

import pytest
import yaml
from launches import finish, metrics, ray_processes, user_ray_head
from openai_server import OpenAIServer, chat_reply

from belle.data.generate import SAMPLES_DIR
from launcher import claim
from launcher.app import run
from launcher.compose import path_fields
from launcher.errors import explain

RELATIVE = ("launcher.run_dir=runs/rel", "data.path='data/a.jsonl,data/more/*.jsonl'",
            "strategy.deepspeed_json=ds.json", "data.cache_dir=cache")
"""Overrides naming the files of ``_project`` the way README examples do: relative to where the command starts."""


def _project(root: Path) -> Path:
    """A folder to start commands in: the bundled instructions split into two data files, a DeepSpeed JSON."""
    (root / "data" / "more").mkdir(parents=True)
    lines = (SAMPLES_DIR / "instruction.jsonl").read_text().splitlines(keepends=True)
    (root / "data" / "a.jsonl").write_text("".join(lines[:1500]))
    (root / "data" / "more" / "b.jsonl").write_text("".join(lines[1500:]))
    (root / "ds.json").write_text(json.dumps({"wall_clock_breakdown": False}))
    return root


def _absolute(start: Path) -> dict:
    """What config.yaml holds for RELATIVE started in ``start``."""
    return {"launcher.run_dir": f"{start}/runs/rel", "data.path": f"{start}/data/a.jsonl,{start}/data/more/*.jsonl",
            "strategy.deepspeed_json": f"{start}/ds.json", "data.cache_dir": f"{start}/cache"}


def _at(config: dict, key: str):
    for name in key.split("."):
        config = config[name]
    return config


def test_every_path_field_is_made_absolute_nested_sections_too(job, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    ppo = job("method=ppo", "data=sample_prompts", "roles=colocate_all", "+model@roles.reward.model=tiny_llama",
              "roles.reward.model.path=./rm/../rm2", "method.ppo.reward_model=rm", "model.path=models/pol",
              "model.tokenizer_path='~/tok'", "strategy.deepspeed_json=/abs/ds.json")
    assert {key: getattr(section, name) for section, name, key, _ in path_fields(ppo)} == {
        "model.path": f"{tmp_path}/models/pol", "model.tokenizer_path": f"{tmp_path}/home/tok",
        "data.path": str(SAMPLES_DIR / "prompts.jsonl"), "data.cache_dir": f"{tmp_path}/belle-home/data-cache",
        "data.smoke_path": str(SAMPLES_DIR / "prompts.jsonl"), "strategy.deepspeed_json": "/abs/ds.json",
        "method.ppo.reward_model": f"{tmp_path}/rm", "launcher.run_dir": f"{tmp_path}/runs/demo",
        "roles.reward.model.path": f"{tmp_path}/rm2",
    } | {"data.cache_dir": ppo.data.cache_dir}  # BELLE_HOME: the test session's own folder, absolute already
    assert Path(ppo.data.cache_dir).is_absolute()


def test_config_yaml_holds_the_paths_every_process_can_read(cfg, tmp_path, monkeypatch):
    start = _project(tmp_path / "start")
    monkeypatch.chdir(start)
    directory = run(cfg("launcher.dry_run=true", *RELATIVE))
    assert directory == start / "runs" / "rel"
    config = yaml.safe_load((directory / "config.yaml").read_text())
    assert {key: _at(config, key) for key in _absolute(start)} == _absolute(start)
    assert _at(config, "data.smoke_path").startswith(f"{SAMPLES_DIR}/instruction.jsonl,")  # ${bundled:…} still


def test_a_run_of_the_last_release_with_relative_paths_resumes_from_where_it_started(cfg, tmp_path, monkeypatch):
    start = _project(tmp_path / "start")
    monkeypatch.chdir(start)
    directory = run(cfg("launcher.dry_run=true", *RELATIVE))
    old = yaml.safe_load((directory / "config.yaml").read_text())
    for key, written in zip(("launcher", "data", "strategy", "data"), RELATIVE, strict=True):
        name, _, value = written.partition("=")
        old[key][name.split(".")[1]] = value.strip("'")
    (directory / "config.yaml").write_text(yaml.safe_dump(old, sort_keys=False))  # as the last release wrote it
    (directory / "metrics.jsonl").write_text('{"step": 1}\n')  # it holds a run

    elsewhere = _project(tmp_path / "elsewhere")
    with pytest.raises(ValueError) as refused:  # files of the same name elsewhere are other files
        run(cfg("launcher.dry_run=true", *RELATIVE[:2], f"strategy.deepspeed_json={elsewhere / 'ds.json'}",
                *RELATIVE[3:]))
    assert "(differs at strategy.deepspeed_json)" in explain(refused.value)
    run(cfg("launcher.dry_run=true", *RELATIVE))  # the relative paths it recorded name these files: it resumes
    assert yaml.safe_load((directory / "config.yaml").read_text())["data"]["path"] == _absolute(start)["data.path"]


def test_a_held_run_dir_is_refused_in_one_line_naming_the_holder(tmp_path):
    directory = tmp_path / "run"
    with claim.held(directory):
        holder = json.loads((directory / ".belle-lock").read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        started = time.monotonic()
        with pytest.raises(ValueError) as refused, claim.held(directory, wait_s=1):
            pass
        assert time.monotonic() - started >= 1
    message = str(refused.value)
    assert message.startswith(f"launcher.run_dir={directory} is in use by another launcher (pid {os.getpid()} on "
                              f"{socket.gethostname()} since ")
    assert message.endswith("): wait for it to end or stop it, or set launcher.run_dir to another directory")
    assert "\n" not in message
    with claim.held(directory):  # released with its holder
        pass


def test_storage_without_locks_is_warned_about_not_refused(tmp_path, monkeypatch, capsys):
    def no_locks(*_):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(claim.fcntl, "flock", no_locks)
    with claim.held(tmp_path / "run"):
        pass
    assert f"warning: {tmp_path / 'run'} cannot be locked (No locks available)" in capsys.readouterr().err


def test_a_launch_refused_before_ray_leaves_a_resumed_run_dir_untouched(cfg, tmp_path):
    """Here: a checkpoints/latest of garbage with no intact checkpoint, found before any worker would meet it."""
    args = (f"launcher.run_dir={tmp_path / 'run'}", "monitor.wandb_mode=offline")
    directory = run(cfg("launcher.dry_run=true", *args))
    (directory / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    (directory / "summary.json").write_text(json.dumps({"status": "preempted", "steps": 1}))
    (directory / "checkpoints").mkdir()
    (directory / "checkpoints" / "latest").write_text("{garbage")
    before = {p.relative_to(directory): p.read_bytes() for p in directory.rglob("*") if p.is_file()}
    with pytest.raises(ValueError) as refused:
        run(cfg(*args))
    assert explain(refused.value) == (
        f"no checkpoint in {directory / 'checkpoints'} can be resumed from (latest is not the JSON a save writes): "
        "restore the damaged files, or set launcher.run_dir to a new directory to train from the start")
    assert {p.relative_to(directory): p.read_bytes() for p in directory.rglob("*") if p.is_file()} == before


def test_a_run_dir_name_too_long_for_the_file_system_names_launcher_name(cfg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()  # an existing parent: stat() of the child fails with ENAMETOOLONG, not ENOENT
    with pytest.raises(ValueError) as refused:
        run(cfg("launcher.dry_run=true", f"launcher.name={'x' * 300}"))
    assert explain(refused.value) == (
        f"launcher.run_dir has a name of 300 bytes ({'x' * 40}…), more than the 255 a file name may have here: set a "
        "shorter launcher.name (it names the run directory) or launcher.run_dir")
    assert not list((tmp_path / "runs").iterdir())


def test_a_sweep_of_no_point_is_an_error(cli, tmp_path):
    out = cli("-m", "launcher.dry_run=true", "optim.lr=range(0)", f"launcher.run_dir={tmp_path / 'sweep'}")
    assert out.returncode == 2
    assert out.stderr == ("error: the sweep expands to no point: optim.lr=range(0) gives no value: give every swept "
                          "key at least one value, e.g. optim.lr=1e-4,2e-4 or train.max_steps=range(10,30,10)\n")
    assert not (tmp_path / "sweep").exists()


@pytest.mark.ray
@pytest.mark.slow
def test_relative_paths_reach_an_existing_clusters_workers_a_second_launcher_is_refused_and_a_sweep_runs_beside(
        launcher, job, tmp_path, monkeypatch):
    """A user's Ray cluster (``ray start --head``) and one real launch joining it (cluster=ray), started outside the
    repository with every path relative (model, tokenizer, data, DeepSpeed JSON, cache, run dir): the workers, in
    folders of Ray's, find them all, the run learns and exports, and the cluster stays up. While it runs, a second
    launcher on its run dir is refused at once, writes nothing, and the first trains every step once. Then, beside
    the user's cluster, with the shell's RAY_ADDRESS naming it: a local sweep over lora_2m's method and strategy
    (LoRA, ZeRO-2) on the tiny model, two points one after the other on embedded Rays, the data tokenized once, each
    point's run dir complete."""
    from belle.model.load import build_model
    from belle.model.tokenizer import tiny_tokenizer

    _project(tmp_path)  # the launcher fixture starts commands in tmp_path
    build_model(job().model, "sdpa").save_pretrained(tmp_path / "models" / "pol")
    tiny_tokenizer().save_pretrained(tmp_path / "tok")
    with user_ray_head(monkeypatch) as port:
        args = (*RELATIVE, "model.path=models/pol", "model.tokenizer_path=tok", "train.max_steps=8",
                "monitor.log_every=1", "data.eval_samples=0", "monitor.wandb_mode=offline", "cluster=ray",
                f"cluster.address=127.0.0.1:{port}")
        run_dir, lock = tmp_path / "runs" / "rel", tmp_path / "runs" / "rel" / ".belle-lock"
        first = launcher(*args, log=tmp_path / "first.log")
        deadline = time.monotonic() + 300
        while not ((run_dir / "plan.json").is_file() and lock.is_file() and f'"pid": {first.pid},' in lock.read_text()):
            assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "first.log").read_text()[-3000:]
            time.sleep(0.2)
        written = {name: (run_dir / name).read_bytes() for name in ("config.yaml", "plan.json")}

        started = time.monotonic()
        second = launcher(*args, log=tmp_path / "second.log")
        second.wait(timeout=300)
        refused_in = time.monotonic() - started
        assert first.poll() is None, "the first launch ended before the second was checked"
        output = (tmp_path / "second.log").read_text()
        assert second.returncode == 2, output[-3000:]
        errors = [line for line in output.splitlines() if line.startswith("error:")]
        assert errors == [output.splitlines()[-1]] and errors[0].startswith(
            f"error: launcher.run_dir={run_dir} is in use by another launcher (pid {first.pid} on ")
        assert errors[0].endswith("wait for it to end or stop it, or set launcher.run_dir to another directory")
        assert "run dir" not in output and "Ray" not in output, "the second launcher planned nothing, started nothing"
        assert {name: (run_dir / name).read_bytes() for name in written} == written
        assert refused_in < 120, refused_in

        finish(first, tmp_path / "first.log")
        assert ray_processes(), "the user's cluster is still up"
        # embedded Rays beside the user's, which the shell names: Ray's helpers must find ours, not
        # "multiple active Ray instances", and the shell's RAY_ADDRESS is not the embedded cluster's
        monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
        sweep_dir, log = tmp_path / "lr", tmp_path / "sweep.log"
        with OpenAIServer(lambda path, body, n: chat_reply("得分：0.6")) as judge:  # each point ends judged
            swept = finish(launcher("-m", "+exp=lora_2m", "+smoke=tiny", f"launcher.run_dir={sweep_dir}",
                                    "train.max_steps=3", "optim.warmup_steps=0", "optim.lr=1e-3,2e-3",
                                    "data.max_length=192", "eval=sample", f"eval.judge.url={judge.url}",
                                    "eval.judge.model=judge-1", "eval.generate.max_new_tokens=8", log=log), log)

    lines = metrics(run_dir)
    assert [line["step"] for line in lines] == list(range(1, 9)), "every step logged once"
    assert lines[-1]["loss"] < lines[0]["loss"] - 0.5
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert {key: _at(config, key) for key in _absolute(tmp_path)} == _absolute(tmp_path)
    assert (config["model"]["path"], config["model"]["tokenizer_path"]) == (f"{tmp_path}/models/pol", f"{tmp_path}/tok")
    assert list((tmp_path / "cache").glob("sft-*/meta.json")), "the data was prepared in the relative data.cache_dir"
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(run_dir / "export" / "adapter" / "adapter_model.safetensors").st_mode & 0o777 == 0o666 & ~mask

    assert "Found multiple active Ray instances" not in swept and "Traceback" not in swept, swept[-3000:]
    assert swept.count("prepared in") == 1 and swept.count("(reused)") == 1, "the data is tokenized once"
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    assert [(p["point"], p["status"], p["job_id"]) for p in sweep["points"]] == [(0, "completed", None),
                                                                                (1, "completed", None)]
    for point in sweep["points"]:
        point_dir = Path(point["run_dir"])
        assert json.loads((point_dir / "summary.json").read_text())["steps"] == 3
        assert "wandb_group: lr" in (point_dir / "config.yaml").read_text()
        plan = json.loads((point_dir / "plan.json").read_text())
        assert (plan["model"]["name"], plan["method"], plan["reference"]["hours_per_epoch"]) == (
            "tiny_llama", "sft+lora", 7)  # lora_2m's method and paper row on the tiny model
        assert plan["strategy"]["zero_stage"] == 2 and (point_dir / "export" / "adapter").is_dir()
        evaluated = json.loads((point_dir / "evaluation" / "summary.json").read_text())
        assert (evaluated["status"], evaluated["score"], evaluated["answers"]) == ("completed", 0.6, 31)
    # the sweep ends with the paper's table: each point's row with lora_2m's paper score beside ours
    rows = [line for line in swept.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| run | model | data | method | trainable | hours per epoch | paper | score |")
    assert len(rows) == 3 and all("| 0.609 | 0.600 |" in row for row in rows[1:]), rows
    assert (sweep_dir / "comparison.csv").is_file()
    assert (sweep_dir / "multirun.yaml").is_file() and not (tmp_path / "multirun.yaml").exists()
