"""The SFT recipe trains for real: 2 CPU workers (gloo), tiny LLaMA, the bundled data, DeepSpeed."""

import json
import math

import pytest
from distributed import spawn

from belle.recipes.sft import train

STEPS = 12


def _run(job, run_dir, world: int = 2) -> dict:
    """Train ``job`` on ``world`` CPU workers; rank 0's summary, checked equal on every rank but the wall time."""
    summaries = spawn(train, job, str(run_dir), world=world)
    same = [{k: v for k, v in s.items() if k != "wall_time_s"} for s in summaries]
    assert all(s == same[0] for s in same)
    return summaries[0]


def _check_run(run_dir, summary: dict) -> list[dict]:
    """The summary and metrics.jsonl of a completed STEPS-step run with log_every 1; the metric lines."""
    assert json.loads((run_dir / "summary.json").read_text()) == summary
    assert summary["status"] == "completed" and summary["steps"] == STEPS
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, STEPS + 1))
    assert all(math.isfinite(line["loss"]) and line["tokens_per_s"] > 0 for line in lines)
    assert math.isfinite(summary["eval_loss"]) and lines[-1]["eval_loss"] == summary["eval_loss"]
    return lines


@pytest.mark.slow
def test_lora_zero3_and_full_zero2_train_and_the_loss_falls(job, tmp_path, workers_env):
    lora_dir, full_dir = tmp_path / "lora", tmp_path / "full"
    common = (
        f"train.max_steps={STEPS}",
        "monitor.log_every=1",
        "optim.lr=1e-2",
        "optim.warmup_steps=2",
    )

    lora = _check_run(lora_dir, _run(job(f"launcher.run_dir={lora_dir}", "train.eval_every=6", *common), lora_dir))
    first, last = (sum(line["loss"] for line in part) / 3 for part in (lora[:3], lora[-3:]))
    print(f"LoRA+ZeRO-3 loss: first 3 {first:.3f}, last 3 {last:.3f}")
    assert last < first - 0.3
    assert lora[0]["lr"] == 0.0 and lora[-1]["grad_norm"] is not None
    assert [line["step"] for line in lora if "eval_loss" in line] == [6, 12]

    full = _check_run(
        full_dir,
        _run(
            job(f"launcher.run_dir={full_dir}", "method=sft", "strategy=zero2", "train.eval_every=0", *common), full_dir
        ),
    )
    first, last = (sum(line["loss"] for line in part) / 3 for part in (full[:3], full[-3:]))
    print(f"full FT+ZeRO-2 loss: first 3 {first:.3f}, last 3 {last:.3f}")
    assert last < first - 0.3


@pytest.mark.slow
def test_a_diverging_loss_stops_the_run_naming_the_step(job, tmp_path, workers_env):
    diverging = job(f"launcher.run_dir={tmp_path}", "train.max_steps=4", "optim.lr=1e30", "optim.warmup_steps=0")
    with pytest.raises(Exception, match=r"the training loss is (nan|inf) at optimizer step 2"):
        _run(diverging, tmp_path / "run", world=1)
    assert not (tmp_path / "run" / "summary.json").exists()
