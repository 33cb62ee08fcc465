"""PPO's faults through `python -m launcher +exp=ppo_math_rule +smoke=tiny` (2 CPU workers, every role on both), all
in one run that must end as an uninterrupted one does: a killed critic rank restarts every role from the latest
checkpoint (train.max_failures=1); SIGTERM saves, exits 75; the rerun resumes, and a stopped actor rank stalls its
phase past method.ppo.phase_timeout_s, is named with its stack and every role restarts again. No Ray process of the
test outlives it."""

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from launches import finish, metrics, wait_until_ray_is_gone

pytestmark = [pytest.mark.ray, pytest.mark.slow]

STEPS, SAVE_EVERY = 6, 2
PPO = ("+exp=ppo_math_rule", "+smoke=tiny", f"train.max_steps={STEPS}", f"train.save_every={SAVE_EVERY}",
       "monitor.log_every=1", "method.ppo.max_new_tokens=16", "method.ppo.reward.rule=chinese_ratio", "optim.lr=1e-3")
"""Short responses, a dense reward and a large learning rate: quick steps whose metrics tell apart any state the
resume would get wrong."""
NO_WANDB, OFFLINE = "monitor.wandb_mode=disabled", "monitor.wandb_mode=offline"
COMPARED = ("reward_mean", "kl", "policy_loss", "value_loss")


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def _latest(run_dir: Path) -> int:
    """The step of the run's latest checkpoint (0: none yet)."""
    pointer = run_dir / "checkpoints" / "latest"
    return json.loads(pointer.read_text())["step"] if pointer.is_file() else 0


def _wait_for(reached, what: str, process: subprocess.Popen, timeout: float = 200) -> None:
    """Until ``reached()`` holds, while the launcher runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if reached():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen (launcher exit code {process.poll()})")


def _wait_for_step(run_dir: Path, step: int, process: subprocess.Popen) -> None:
    """Until metrics.jsonl holds ``step`` (the next one is under way)."""
    _wait_for(lambda: any(r["step"] >= step for r in metrics(run_dir)), f"step {step} logged", process)


def _pid(run_dir: Path, role: str, rank: int) -> int:
    """The pid of ``role``'s rank in placement.json."""
    return json.loads((run_dir / "placement.json").read_text())["roles"][role][rank]["pid"]


def test_a_killed_a_stopped_and_a_stalled_rank_leave_the_run_as_if_never_interrupted(launcher, tmp_path):
    """(d) a killed critic rank restarts every role from the latest checkpoint, redoing at most save_every steps, the
    restart naming role, rank, pid and phase; (c) once the restart has trained a step, SIGTERM: checkpoint,
    "preempted", exit 75; (e) the rerun resumes in the same W&B run and, once it has trained a step, a SIGSTOPped
    actor rank stalls its phase for method.ppo.phase_timeout_s: named with its pid and phase, its stacks in hang/,
    every role restarts. Every step is logged once and equals an uninterrupted run's."""
    whole = tmp_path / "whole"
    finish(launcher(f"launcher.run_dir={whole}", *PPO, NO_WANDB, log=tmp_path / "whole.log"), tmp_path / "whole.log")

    run_dir, log = tmp_path / "run", tmp_path / "first.log"
    faulty = (*PPO, OFFLINE, "train.max_failures=1", "method.ppo.phase_timeout_s=15")
    process = launcher(f"launcher.run_dir={run_dir}", *faulty, log=log)
    _wait_for(lambda: _latest(run_dir) >= SAVE_EVERY, "the first checkpoint", process)
    saved, killed = _latest(run_dir), _pid(run_dir, "critic", 1)
    logged = max(r["step"] for r in metrics(run_dir))
    os.kill(killed, signal.SIGKILL)
    _wait_for(lambda: "restarting every role" in log.read_text() and _pid(run_dir, "critic", 1) != killed,
              "the restart", process)
    assert logged - saved <= SAVE_EVERY  # the steps lost
    restarted_at = max(r["step"] for r in metrics(run_dir))
    _wait_for_step(run_dir, restarted_at + 1, process)  # the restarted roles train
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 75, log.read_text()[-3000:]
    output, summary = log.read_text(), _summary(run_dir)
    assert re.search(rf"error: role \w+ rank 1 \(node [\d.]+, pid {killed}\) died during phase \w+: .+; restarting "
                     r"every role from the latest checkpoint \(restart 1 of train.max_failures=1\)", output), output
    assert output.count(f"step 1/{STEPS} ") == 1, "the restart resumed from the checkpoint"
    stopped_at = summary["steps"]
    assert summary["status"] == "preempted" and summary["restarts"] == 1 and _latest(run_dir) == stopped_at < STEPS
    run_id = (run_dir / "wandb_id").read_text().strip()
    wait_until_ray_is_gone()

    log = tmp_path / "second.log"
    process = launcher(f"launcher.run_dir={run_dir}", *faulty, log=log)
    _wait_for_step(run_dir, stopped_at + 1, process)
    stopped = _pid(run_dir, "actor", 1)
    os.kill(stopped, signal.SIGSTOP)
    try:
        output = finish(process, log)
    finally:  # never leave a stopped process behind
        with contextlib.suppress(ProcessLookupError):
            os.kill(stopped, signal.SIGCONT)
            os.kill(stopped, signal.SIGKILL)
    assert f"step {stopped_at + 1}/{STEPS} " in output and f"step {stopped_at}/{STEPS} " not in output
    assert re.search(rf"error: role \w+ rank 1 \(node [\d.]+, pid {stopped}\) stalled in phase \w+ for 15 s "
                     r"\(method\.ppo\.phase_timeout_s\); .+; restarting every role", output), output[-3000:]
    assert (run_dir / "hang").is_dir()
    assert _summary(run_dir)["status"] == "completed"
    assert (run_dir / "wandb_id").read_text().strip() == run_id
    resumed, uninterrupted = metrics(run_dir), metrics(whole)
    assert [r["step"] for r in resumed] == [r["step"] for r in uninterrupted] == list(range(1, STEPS + 1))
    for ours, theirs in zip(resumed, uninterrupted, strict=True):
        for key in COMPARED:
            assert ours[key] == pytest.approx(theirs[key], abs=1e-5), (ours["step"], key)
