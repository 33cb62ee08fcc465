"""`python -m launcher` trains for real: Ray workers running DeepSpeed on CPU (gloo), no mocks."""

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from launches import finish, metrics, ray_processes, wait_until_ray_is_gone
from openai_server import OpenAIServer, chat_reply

pytestmark = [pytest.mark.ray, pytest.mark.slow]



def _kill_everything_started_by(process: subprocess.Popen) -> None:
    """SIGKILL the driver with all its descendants at once, Ray's workers included (raylet starts them in their own
    process groups, so killing the driver's group alone lets them train on): what a node loss does to a job."""
    import psutil

    tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    for member in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    process.wait()


def _wait_for_checkpoint(run_dir: Path, step: int, process: subprocess.Popen, timeout: float = 300) -> None:
    pointer = run_dir / "checkpoints" / "latest"
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if pointer.is_file() and json.loads(pointer.read_text())["step"] >= step:
            return
        time.sleep(0.2)
    raise AssertionError(f"no checkpoint of step {step} appeared")


def test_demo_trains_and_leaves_the_run_directory(launcher, tmp_path):
    run_dir, log = tmp_path / "demo", tmp_path / "demo.log"
    output = finish(launcher(f"launcher.run_dir={run_dir}", log=log), log)
    # no Ray error or warning line a newcomer would misread
    assert not any(word in output for word in ("PreemptionWatcher", "PlacementGroupCleaner", " E ")), output[-3000:]

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 30 and summary["error"] is None
    lines = metrics(run_dir)
    assert [line["step"] for line in lines] == list(range(2, 31, 2))
    first, last = (sum(line["loss"] for line in part) / 3 for part in (lines[:3], lines[-3:]))
    assert last < first - 0.2, (first, last)
    assert all(line["tokens_per_s"] > 0 and line["mfu"] is None for line in lines)
    evals = [line["eval_loss"] for line in lines if "eval_loss" in line]
    assert [line["step"] for line in lines if "eval_loss" in line] == [10, 20, 30]
    # a newcomer sees it learn: the held-out loss falls by a third from its first measure
    assert evals == sorted(evals, reverse=True) and evals[-1] < evals[0] * 2 / 3, evals
    for name in ("config.yaml", "plan.json", "loss.png", "checkpoints/latest", "export/adapter", "export/base"):
        assert (run_dir / name).exists(), name
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("step-*")) == ["step-000020", "step-000030"]
    assert json.loads((run_dir / "checkpoints" / "latest").read_text())["step"] == 30

    # the README's next step: evaluate what it trained (its LoRA adapter on its base, as the run dir names it),
    # judged by an OpenAI-compatible server on 127.0.0.1
    with OpenAIServer(lambda path, body, n: chat_reply("得分：0.5")) as judge:
        evaluated = tmp_path / "eval"
        finish(launcher(f"launcher.run_dir={evaluated}", "method=eval", f"model.path={run_dir}",
                        f"eval.judge.url={judge.url}", "eval.judge.model=judge-1", "method.generate.max_new_tokens=16",
                        log=tmp_path / "eval.log"), tmp_path / "eval.log")
    summary = json.loads((evaluated / "summary.json").read_text())
    assert (summary["status"], summary["score"], summary["unscored"], summary["answers"]) == ("completed", 0.5, 0, 31)
    rows = [json.loads(line) for line in (evaluated / "generations.jsonl").read_text().splitlines()]
    assert rows[0]["model"]["kind"] == "adapter" and rows[0]["model"]["adapter"] == str(run_dir / "export" / "adapter")
    assert _answer_of_the_adapter(run_dir / "export" / "adapter", rows[0]) == rows[0]["response"]


def _answer_of_the_adapter(adapter: Path, row: dict) -> str:
    """Greedy answer of PEFT's adapter on its base to the row's prompt, as plain transformers + PEFT give it."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16), adapter)
    ids = torch.tensor([tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]])
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=16,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)[0, ids.shape[1]:]
    tokens, eos = out.tolist(), tokenizer.eos_token_id
    return tokenizer.decode(tokens[:tokens.index(eos)] if eos in tokens else tokens)


def test_a_killed_and_a_hung_worker_are_replaced_then_a_killed_launch_resumes_as_if_never_stopped(
        launcher, train_recipe, tmp_path):
    """One run, three faults (train.max_failures=2): a worker SIGKILLed after the step-4 checkpoint is replaced; one
    SIGSTOPped after the step-8 checkpoint is found by the watchdog within train.hang_timeout_s, which writes every
    rank's stack, names the stopped rank and stops the group, and the launcher restarts it from the last checkpoint;
    then the whole launch is killed after the step-12 checkpoint (a node loss). The rerun continues after the
    checkpoint without tokenizing again, in the same W&B run, and ends where the same job trained uninterrupted,
    without Ray or the launcher, does."""
    common = ("train.max_steps=20", "train.save_every=4", "monitor.log_every=1", "monitor.wandb_mode=offline",
              "data.max_length=224", "train.max_failures=2", "train.hang_timeout_s=10")  # a data cache of its own
    _, whole = train_recipe(*common, "monitor.wandb_mode=disabled", name="whole")

    run_dir, log = tmp_path / "run", tmp_path / "run.log"
    process = launcher(f"launcher.run_dir={run_dir}", *common, log=log)
    _wait_for_checkpoint(run_dir, 4, process)
    workers = [line.split()[0] for line in ray_processes() if "PoolWorker" in line]
    assert workers
    os.kill(int(workers[-1]), signal.SIGKILL)
    _wait_for_checkpoint(run_dir, 8, process)
    stopped = json.loads((run_dir / "progress" / "rank-1.json").read_text())["pid"]
    os.kill(stopped, signal.SIGSTOP)
    _wait_for_checkpoint(run_dir, 12, process)
    _kill_everything_started_by(process)
    wait_until_ray_is_gone()
    output = log.read_text()
    assert re.search(rf"hang: no rank finished a step for 10 s: stalled rank 1 on \S+ \(pid {stopped}, stopped\)",
                     output), output[-2000:]
    assert sorted(path.name.split("-rank-")[1] for path in (run_dir / "hang").iterdir()) == ["0.txt", "1.txt"]
    killed_at = json.loads((run_dir / "checkpoints" / "latest").read_text())["step"]
    assert killed_at < 20
    run_id = (run_dir / "wandb_id").read_text().strip()

    output = finish(launcher(f"launcher.run_dir={run_dir}", *common, log=tmp_path / "rerun.log"),
                    tmp_path / "rerun.log")
    assert "prepared in" not in output and "(reused)" in output, "the rerun does not tokenize again"
    assert f"step {killed_at + 1}/20 " in output and f"step {killed_at}/20 " not in output
    assert [line["step"] for line in metrics(run_dir)] == list(range(1, 21)), "every step logged once"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 20
    uninterrupted = metrics(whole)[-1]
    assert uninterrupted["step"] == 20
    assert summary["final_loss"] == pytest.approx(uninterrupted["loss"], rel=1e-3)  # same weights, optimizer, data, RNG
    assert (run_dir / "wandb_id").read_text().strip() == run_id
    # one offline segment per worker-group start, all of them the same W&B run: 3 in the faulty launch, 1 rerun
    assert len(list((run_dir / "wandb").glob(f"offline-run-*-{run_id}*"))) == 4


def test_nan_loss_fails_the_run_and_keeps_the_last_good_checkpoint(launcher, tmp_path):
    run_dir, log = tmp_path / "nan", tmp_path / "nan.log"
    process = launcher(f"launcher.run_dir={run_dir}", "optim.lr=1e30", "optim.warmup_steps=0", "train.save_every=1",
                       "train.max_steps=6", log=log)
    process.wait(timeout=400)
    assert process.returncode == 1
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "training loss is nan" in summary["error"]
    latest = json.loads((run_dir / "checkpoints" / "latest").read_text())
    assert (run_dir / "checkpoints" / latest["dir"] / "state").is_dir()
    assert "error: the run failed" in log.read_text()


@pytest.mark.gpu
def test_gpu_training_of_a_110m_model(launcher, tmp_path):
    """bf16 on CUDA with the flash path `auto` picks (flash-attn, else torch's varlen kernel), NCCL, packed rows."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    run_dir, log = tmp_path / "gpu", tmp_path / "gpu.log"
    output = finish(launcher(f"launcher.run_dir={run_dir}", "model=llama_110m", "method=sft",
                              "cluster.gpus_per_node=1", "data.max_length=1024", "strategy.micro_batch=4",
                              "strategy.global_batch=8", "train.max_steps=20", "monitor.log_every=1",
                              "optim.lr=1e-3", log=log), log)
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["model"]["attn_implementation"].startswith("auto (on the workers")
    attention = re.search(r"workers: 1 x .*, attention (\S+)", output).group(1)
    assert attention in ("flash_attention_2", "torch_varlen")
    lines = metrics(run_dir)
    assert lines[-1]["loss"] < lines[0]["loss"] - 1.0
    assert all(line["mfu"] is not None and line["mfu"] > 0 for line in lines)
    print(f"GPU 110M: {attention}, median tokens/s "
          f"{sorted(line['tokens_per_s'] for line in lines)[len(lines) // 2]:.0f}, "
          f"MFU {lines[-1]['mfu']:.3f}, memory {lines[-1]['memory_gib']:.1f} GiB")


@pytest.mark.parametrize("experiment", ["ppo_7b"])
def test_experiment_smoke_runs_its_method_on_the_tiny_model(launcher, tmp_path, experiment):
    """A placed-roles experiment end to end (lora_2m runs in the local sweep of tests/launcher/test_paths_and_lock.py;
    the other methods train in tests/recipes/test_experiments_train.py, ppo_math_rule in
    tests/launcher/test_ppo_faults.py)."""
    run_dir, log = tmp_path / experiment, tmp_path / f"{experiment}.log"
    finish(launcher(f"+exp={experiment}", "+smoke=tiny", f"launcher.run_dir={run_dir}", "train.max_steps=2",
                     log=log), log)
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["experiment"] == experiment and plan["model"]["name"] == "tiny_llama"
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 2
    export = run_dir / "export"
    lora = plan["method"].endswith("+lora")
    assert (export / "adapter").is_dir() if lora else (export / "model.safetensors").is_file()
    if plan["recipe"]["kind"] == "driver":  # PPO: where every role ran, and each step's reward and KL
        placed = json.loads((run_dir / "placement.json").read_text())["roles"]
        assert {"actor", "critic"} <= set(placed) and all(len(ranks) == 2 for ranks in placed.values())
        assert all({"reward_mean", "kl", "policy_loss", "value_loss"} <= set(r) for r in metrics(run_dir))
