"""The installed command works from any directory, writes the run files, and fails in one line."""

import json

import yaml


def test_help_and_cfg_from_another_directory(cli):
    assert cli("--help").returncode == 0
    shown = cli("+exp=lora_2m", "--cfg", "job")
    assert shown.returncode == 0, shown.stderr
    assert yaml.safe_load(shown.stdout)["model"]["name"] == "llama_7b"


def test_dry_run_writes_plan_and_config(cli, tmp_path):
    out = cli("+exp=lora_2m", "launcher.dry_run=true", f"launcher.run_dir={tmp_path / 'plan'}")
    assert out.returncode == 0, out.stderr
    plan = json.loads((tmp_path / "plan" / "plan.json").read_text())
    config = yaml.safe_load((tmp_path / "plan" / "config.yaml").read_text())
    assert plan["model"]["params_trainable"] == 17_891_328 and config["optim"]["lr"] == 2e-4
    for shown in ("world size 8", "accumulation 4", "ZeRO-2", "fp16", "17.89M", "GiB", "paper: 7 h"):
        assert shown in out.stdout
    assert not list(tmp_path.glob("elsewhere/*")), "Hydra must not write into the working directory"


def test_preview_marks_trained_spans(cli, tmp_path):
    out = cli("launcher.preview=5", f"launcher.run_dir={tmp_path / 'pv'}")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in (tmp_path / "pv" / "preview.jsonl").read_text().splitlines()]
    assert len(rows) == 5
    for row in rows:
        assert row["text"].startswith("Human: \n") and len(row["input_ids"]) == len(row["labels"])
        assert row["labels"][0] == -100 and row["labels"][-1] == row["input_ids"][-1]  # answer EOS is trained
    assert out.stdout.count("⟦") >= 5 and "\nAssistant: \n⟦" in out.stdout


def test_errors_are_one_line_with_exit_code_2(cli, tmp_path):
    out = cli("+exp=lora_2m", "optim.lr=-1", f"launcher.run_dir={tmp_path / 'x'}")
    assert out.returncode == 2
    assert out.stderr == "error: optim.lr=-1.0 must be > 0: set optim.lr=2e-4\n"
    assert not (tmp_path / "x").exists()
    unknown = cli("+exp=lora_3m")
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: unknown exp 'lora_3m': choose one of demo,")
    assert unknown.stderr.count("\n") == 1


def test_a_sweep_checks_every_point_before_writing_any(cli, tmp_path):
    bad = cli("-m", "launcher.dry_run=true", "optim.lr=1e-3,-1", f"launcher.run_dir={tmp_path / 'bad'}")
    assert bad.returncode == 2 and bad.stderr.splitlines()[-1].startswith("error: sweep point 1 (")  # which point
    assert bad.stderr.endswith("optim.lr=-1.0 must be > 0: set optim.lr=2e-4\n")
    assert not (tmp_path / "bad").exists(), "the first point was written before the second was checked"

    good = cli("-m", "launcher.dry_run=true", "optim.lr=choice(1e-3,2e-3)", "train.max_steps=range(10,30,10)",
               f"launcher.run_dir={tmp_path / 'good'}")
    assert good.returncode == 0, good.stderr
    points = [yaml.safe_load((tmp_path / "good" / str(n) / "config.yaml").read_text()) for n in range(4)]
    assert [(p["optim"]["lr"], p["train"]["max_steps"]) for p in points] == [
        (1e-3, 10), (1e-3, 20), (2e-3, 10), (2e-3, 20)]
    assert [p["launcher"]["name"] for p in points] == ["good-0", "good-1", "good-2", "good-3"]
    assert not list((tmp_path / "elsewhere").iterdir()), "Hydra wrote into the working directory"


def test_a_damaged_job_record_is_skipped_naming_its_line(tmp_path, monkeypatch, capsys):
    from launcher.backends.slurm.jobs import records, records_file

    monkeypatch.setenv("BELLE_HOME", str(tmp_path))
    good = '{"job_id": "7", "name": "a", "run_dir": "/r", "log": "/r/l", "submitted": "now"}'
    records_file().write_text(good + '\n{"job_id": "8", "na\n')
    assert [r["job_id"] for r in records()] == ["7"]
    assert f"warning: {records_file()}:2 is not a job record" in capsys.readouterr().err
