"""Bad input fails before anything is launched, with one line that names the fix."""

import json
import os

import pytest
from composed import refusal

from launcher.app import run


@pytest.fixture
def strict(cfg, tmp_path):
    """Overrides → error message of a preview run (which reads data and tokenizer like a launch)."""
    return lambda *o: refusal(cfg, "launcher.preview=1", f"launcher.run_dir={tmp_path / 'run'}", *o)


def _jsonl(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def test_unknown_experiment_lists_the_available_ones(cfg):
    message = refusal(cfg, "+exp=lora_3m")
    assert message.startswith("unknown exp 'lora_3m': choose one of ") and "lora_2m" in message and "demo" in message


def test_unknown_group_option(cfg):
    assert "choose one of" in refusal(cfg, "model=llama_70b") and "tiny_llama" in refusal(cfg, "model=llama_70b")


@pytest.mark.parametrize("override", ["strategy.zero_stag=3", "+strategy.zero_stag=3"])
def test_misspelled_key_suggests_the_real_one(cfg, override):
    message = refusal(cfg, override)
    assert "strategy.zero_stag is not a config key (did you mean strategy.zero_stage?)" in message


def test_wrong_type(cfg):
    assert "strategy.zero_stage" in refusal(cfg, "strategy.zero_stage=three")


def test_zero_stage_4(cfg):
    assert refusal(cfg, "strategy.zero_stage=4") == (
        "strategy.zero_stage=4 is not one of 0, 1, 2, 3: set strategy.zero_stage=<one of them>"
    )


@pytest.mark.parametrize("lr", ["0", "-1e-4"])
def test_learning_rate_must_be_positive(cfg, lr):
    assert "must be > 0: set optim.lr=" in refusal(cfg, f"optim.lr={lr}")


def test_global_batch_not_divisible(cfg, tmp_path):
    message = refusal(cfg, "strategy.micro_batch=3", "launcher.dry_run=true", f"launcher.run_dir={tmp_path}")
    assert "does not divide strategy.global_batch=8" in message and "set strategy.global_batch=" in message


def test_missing_data_file(strict, tmp_path):
    assert "set data.path=" in strict(f"data.path={tmp_path}/nope.jsonl")


def test_malformed_line_names_file_and_line(strict, tmp_path):
    path = _jsonl(tmp_path / "bad.jsonl", [json.dumps({"instruction": "a", "input": "", "output": "b"}), "{oops"])
    assert f"{path}:2" in strict(f"data.path={path}")


def test_record_of_neither_shape(strict, tmp_path):
    path = _jsonl(tmp_path / "odd.jsonl", [json.dumps({"question": "a", "answer": "b"})])
    message = strict(f"data.path={path}")
    assert f"{path}:1" in message and "neither" in message


def test_empty_dataset(strict, tmp_path):
    path = _jsonl(tmp_path / "empty.jsonl", [])
    assert "no records" in strict(f"data.path={path}")


def test_every_sample_truncated(strict, tmp_path):
    long = json.dumps({"instruction": "很长的问题" * 200, "input": "", "output": "答"})
    path = _jsonl(tmp_path / "long.jsonl", [long, long])
    assert "raise data.max_length" in strict(f"data.path={path}", "data.max_length=32")


def test_lora_targets_absent_from_model(cfg, tmp_path):
    message = refusal(cfg, "method.lora.target_modules=[query_key_value]", "launcher.dry_run=true",
                     f"launcher.run_dir={tmp_path}")
    assert "query_key_value" in message and "q_proj" in message and "o_proj" in message


def test_model_path_without_config(strict, tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    assert "has no config.json" in strict(f"model.path={folder}")


def test_flash_attention_where_it_cannot_run(cfg, tmp_path):
    dry = ("launcher.dry_run=true", f"launcher.run_dir={tmp_path}")
    message = refusal(cfg, "model.attn_implementation=flash_attention_2", *dry)
    assert "the workers have no CUDA GPU: set model.attn_implementation=sdpa, or cluster.gpus_per_node" in message
    assert "set strategy.precision=bf16 or model.attn_implementation=sdpa" in refusal(
        cfg, "model.attn_implementation=torch_varlen", "cluster.gpus_per_node=4", "strategy.precision=fp32", *dry)
    gpu = ("cluster.gpus_per_node=4", "strategy.precision=bf16", *dry)
    assert "has no bf16: set strategy.precision=fp16" in refusal(cfg, "cluster.gpu_type=V100-32GB", *gpu)
    assert "set data.pack=false" in refusal(
        cfg, "model=bloomz_7b1_mt", "method=sft", "+exp=ft_2m", "model.attn_implementation=eager", *gpu)


def test_gpu_attention_is_resolved_on_the_workers(cfg, tmp_path):
    """The submitting host (no GPU, no flash-attn here) does not decide what GPU workers can run."""
    def attention(*overrides: str) -> str:
        run_dir = run(cfg("cluster.gpus_per_node=4", "launcher.dry_run=true", *overrides))
        return json.loads((run_dir / "plan.json").read_text())["model"]["attn_implementation"]

    assert attention("model.attn_implementation=flash_attention_2", "strategy.precision=bf16",
                     f"launcher.run_dir={tmp_path / 'fa'}") == "flash_attention_2"
    assert attention("strategy.precision=bf16", f"launcher.run_dir={tmp_path / 'auto'}").startswith(
        "auto (on the workers: flash_attention_2 if")
    assert attention("cluster.gpu_type=V100-32GB", "strategy.precision=fp16",
                     f"launcher.run_dir={tmp_path / 'v100'}") == "sdpa"


def test_real_model_without_weights_cannot_launch(cfg, tmp_path):
    message = refusal(cfg, "+exp=lora_2m", f"launcher.run_dir={tmp_path}")
    assert "set model.path=" in message
    assert not (tmp_path / "plan.json").exists()


def test_run_dir_of_another_run_is_not_overwritten(cfg, tmp_path):
    run(cfg("launcher.dry_run=true", f"launcher.run_dir={tmp_path}"))
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')  # the directory now holds a run
    before = (tmp_path / "config.yaml").read_text()
    message = refusal(cfg, "launcher.dry_run=true", f"launcher.run_dir={tmp_path}", "optim.lr=1e-3")
    assert "differs at optim.lr" in message
    assert (tmp_path / "config.yaml").read_text() == before
    run(cfg("launcher.dry_run=true", f"launcher.run_dir={tmp_path}"))  # the same config may continue there


def test_deepspeed_json_contradicting_the_strategy(cfg, tmp_path):
    raw = tmp_path / "ds.json"
    raw.write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    message = refusal(cfg, f"strategy.deepspeed_json={raw}", "launcher.dry_run=true", f"launcher.run_dir={tmp_path}")
    assert "strategy.zero_stage=3" in message and "zero_optimization.stage" in message


def test_fp16_on_cpu_workers(cfg, tmp_path):
    message = refusal(cfg, "strategy.precision=fp16", "launcher.dry_run=true", f"launcher.run_dir={tmp_path}")
    assert message.startswith("strategy.precision=fp16 needs GPU workers") and "set strategy.precision=bf16" in message


def test_a_directory_the_launcher_did_not_make_is_never_written(cfg, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "config.yaml").write_text("my: own config\n")
    (project / "plan.json").write_text("{}\n")
    message = refusal(cfg, "launcher.dry_run=true", f"launcher.run_dir={project}")
    assert message == (f"launcher.run_dir={project} holds config.yaml, plan.json that the launcher did not write: "
                       "set launcher.run_dir to a new directory")
    assert sorted(p.name for p in project.iterdir()) == ["config.yaml", "plan.json"]
    assert (project / "config.yaml").read_text() == "my: own config\n"


def test_a_corrupt_config_yaml_of_a_run_is_one_line(cfg, tmp_path):
    run(cfg("launcher.dry_run=true", f"launcher.run_dir={tmp_path}"))
    (tmp_path / "config.yaml").write_text("model: [unclosed\n")
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')
    assert "holds a config.yaml that is not valid YAML" in refusal(cfg, "launcher.dry_run=true",
                                                                  f"launcher.run_dir={tmp_path}")


def test_a_run_dir_that_is_a_file_or_unwritable_is_one_line(cfg, tmp_path):
    a_file = tmp_path / "r05"
    a_file.write_text("mine\n")
    assert refusal(cfg, "launcher.dry_run=true", f"launcher.run_dir={a_file}").endswith(
        "is a file: set launcher.run_dir to a new directory")
    assert a_file.read_text() == "mine\n"
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.access(locked, os.W_OK):  # root ignores the mode: take a place no one may write to
        locked = "/sys"
    assert "cannot be written" in refusal(cfg, "launcher.dry_run=true", f"launcher.run_dir={locked}/run")


def test_an_unquoted_comma_list_says_to_quote_it(cfg):
    assert refusal(cfg, "data.path=a.json,b.json").endswith(
        "quote a list of values so it is not read as a sweep: \"data.path='a.json,b.json'\"")


def test_a_preview_of_a_tiny_file_needs_no_schedule(cfg, tmp_path):
    record = json.dumps({"instruction": "你好", "input": "", "output": "你好！"}, ensure_ascii=False)
    data = _jsonl(tmp_path / "two.jsonl", [record, record])
    run(cfg("launcher.preview=2", f"data.path={data}", "data.eval_samples=0", f"launcher.run_dir={tmp_path / 'run'}"))
    assert len((tmp_path / "run" / "preview.jsonl").read_text().splitlines()) == 2


def test_a_run_from_before_the_marker_is_still_resumable(cfg, tmp_path):
    run(cfg("launcher.dry_run=true", f"launcher.run_dir={tmp_path}"))
    (tmp_path / ".belle-run").unlink()
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')
    run(cfg("launcher.dry_run=true", f"launcher.run_dir={tmp_path}"))
    assert (tmp_path / ".belle-run").is_file()


def test_long_bf16_accumulation_under_zero2_is_flagged(cfg, tmp_path):
    run_dir = run(cfg("+exp=ft_2m", "strategy=zero2", "strategy.precision=bf16", "strategy.micro_batch=1",
                      "strategy.global_batch=128", "launcher.dry_run=true", f"launcher.run_dir={tmp_path}"))
    warnings = json.loads((run_dir / "plan.json").read_text())["warnings"]
    assert any("gradients accumulate in bf16 over 16 micro-batches under ZeRO-2" in w for w in warnings), warnings


def test_gpu_workers_reserve_the_nodes_cpu_share(job):
    assert job().cluster.worker_cpus == 1  # CPU workers
    assert job("cluster=slurm", "cluster.gpus_per_node=8", "cluster.cpus_per_node=96").cluster.worker_cpus == 12
    assert job("cluster=slurm", "cluster.gpus_per_node=8").cluster.worker_cpus == 8  # cores unknown: GPU_WORKER_CPUS
    assert job("cluster=slurm", "cluster.gpus_per_node=8", "cluster.cpus_per_worker=4").cluster.worker_cpus == 4


@pytest.mark.parametrize("override", ["train.epochs=inf", "optim.lr=inf", "optim.lr=nan"])
def test_infinite_numbers_are_refused_in_one_line(cfg, tmp_path, override):
    message = refusal(cfg, override, "launcher.dry_run=true", f"launcher.run_dir={tmp_path}")
    assert message.startswith(f"{override.split('=')[0]}=") and "must be a finite number: set" in message
    assert not (tmp_path / "plan.json").exists()


def test_gpus_this_machine_lacks_are_refused_before_ray_starts(cfg, tmp_path):
    """cluster=local trains here: asking for a GPU on this CPU-only machine fails in one line, not in NCCL."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    message = refusal(cfg, "cluster.gpus_per_node=1", "optim.warmup_steps=0", "strategy.global_batch=4",
                     f"launcher.run_dir={tmp_path / 'run'}")
    assert "cluster.gpus_per_node=1 but this machine has 0 CUDA GPU(s)" in message
    assert not (tmp_path / "run").exists()


def test_local_cluster_is_one_machine(cfg, tmp_path):
    message = refusal(cfg, "cluster.nodes=2", "launcher.dry_run=true", f"launcher.run_dir={tmp_path}")
    assert "cluster=local runs on this one machine, not cluster.nodes=2: set cluster.nodes=1" in message


def test_malformed_wandb_key_is_refused_before_launch(cfg, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "short-key")
    message = refusal(cfg, f"launcher.run_dir={tmp_path / 'run'}")
    assert "WANDB_API_KEY has 9 characters, not a W&B API key" in message and not (tmp_path / "run").exists()


@pytest.mark.parametrize("override, fix", [
    ("strategy.micro_batch=two", "set strategy.micro_batch=<an integer>"),
    ("optim.lr=[1,2]", "set optim.lr=<a number>"),
    ("strategy.micro_batch=${launcher.name}", "set strategy.micro_batch=<an integer>"),
    ("launcher.name=${nope.key}", "point the ${…} at an existing key"),
    ("data.path=${nosuch:x}", "use a known resolver"),
    ("launcher.name=${launcher.name}x", "point the ${…} at an existing key"),
    ("data.path=${oc.env:BELLE_TEST_UNSET_VAR}", "export BELLE_TEST_UNSET_VAR before launching, or give a default"),
    ("optim.beta2=1.0", "optim.beta2=1.0 must be in [0, 1): set optim.beta2=0.999"),
    ("cluster.gpus_per_node=-1", "set cluster.gpus_per_node=<GPUs per machine>, or 0 for CPU workers"),
    ("model=llama_8b", "(e.g. model=llama_7b)"),  # the closest option, not the first
])
def test_wrong_values_name_their_fix(cfg, tmp_path, override, fix):
    assert fix in refusal(cfg, override, "launcher.dry_run=true", f"launcher.run_dir={tmp_path}")


@pytest.mark.parametrize("args, fix", [
    (["--frobnicate"], "unknown option --frobnicate: settings are key=value overrides"),
    (["strategy.micro_batch=["], "cannot parse an override (no viable alternative at input '['): write key=value, "
                                 "and quote a value"),
    (["launcher.run_dir=runs/x_$(touch PWNED)"], "quote a value holding"),
])
def test_command_line_mistakes_are_one_line(cli, args, fix):
    out = cli(*args, "launcher.dry_run=true")
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and fix in out.stderr, out.stderr


def test_nothing_listening_at_the_ray_address_is_one_line_within_seconds(cfg, tmp_path):
    import socket
    import time

    with socket.socket() as s:  # a port nothing listens on: bound, never listened
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        started = time.monotonic()
        message = refusal(cfg, "cluster=ray", f"cluster.address=127.0.0.1:{port}", f"launcher.run_dir={tmp_path / 'r'}",
                         "train.max_steps=2", "optim.warmup_steps=0")
    assert time.monotonic() - started < 60
    assert f"cluster.address=127.0.0.1:{port}: nothing answers at 127.0.0.1:{port}" in message
    assert "start Ray there" in message and not (tmp_path / "r").exists()


def test_more_cpu_workers_than_cores_is_refused_before_ray(cfg, tmp_path):
    cores = os.cpu_count()
    message = refusal(cfg, f"cluster.cpu_workers_per_node={2 * cores}", f"strategy.global_batch={4 * cores}",
                     "optim.warmup_steps=0", f"launcher.run_dir={tmp_path / 'r'}")
    assert f"set cluster.cpu_workers_per_node={cores} (or fewer)" in message and not (tmp_path / "r").exists()

