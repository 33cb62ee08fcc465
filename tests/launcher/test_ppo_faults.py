"""PPO's faults through `python -m launcher +exp=ppo_math_rule +smoke=tiny` (2 CPU workers, every role on both):
SIGTERM saves, exits 75 and the rerun continues as an uninterrupted run does; a killed critic rank restarts every
role from the latest checkpoint (train.max_failures=1), then a stopped PoolWorker stalls its phase past
method.ppo.phase_timeout_s and fails the run naming role, rank and phase. No Ray process of a test outlives it."""

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

STEPS, SAVE_EVERY = 5, 2
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


def test_a_stopped_run_resumes_as_if_never_stopped(launcher, tmp_path):
    """(c) SIGTERM during step ~3: checkpoint, "preempted", exit 75; the rerun's steps equal an uninterrupted run's."""
    whole = tmp_path / "whole"
    finish(launcher(f"launcher.run_dir={whole}", *PPO, NO_WANDB, log=tmp_path / "whole.log"), tmp_path / "whole.log")

    run_dir = tmp_path / "stopped"
    first = launcher(f"launcher.run_dir={run_dir}", *PPO, OFFLINE, log=tmp_path / "first.log")
    _wait_for_step(run_dir, 2, first)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=120) == 75, (tmp_path / "first.log").read_text()[-3000:]
    summary = _summary(run_dir)
    stopped_at = summary["steps"]
    assert summary["status"] == "preempted" and 2 <= stopped_at < STEPS and _latest(run_dir) == stopped_at
    run_id = (run_dir / "wandb_id").read_text().strip()
    wait_until_ray_is_gone()

    output = finish(launcher(f"launcher.run_dir={run_dir}", *PPO, OFFLINE, log=tmp_path / "second.log"),
                     tmp_path / "second.log")
    assert f"step {stopped_at + 1}/{STEPS} " in output and f"step {stopped_at}/{STEPS} " not in output
    assert _summary(run_dir)["status"] == "completed"
    assert (run_dir / "wandb_id").read_text().strip() == run_id
    resumed, uninterrupted = metrics(run_dir), metrics(whole)
    assert [r["step"] for r in resumed] == [r["step"] for r in uninterrupted] == list(range(1, STEPS + 1))
    for ours, theirs in zip(resumed, uninterrupted, strict=True):
        for key in COMPARED:
            assert ours[key] == pytest.approx(theirs[key], abs=1e-5), (ours["step"], key)


def test_a_killed_critic_rank_restarts_every_role_then_a_stopped_actor_rank_fails_the_run_naming_it(launcher,
                                                                                                      tmp_path):
    """(d) with train.max_failures=1: a killed critic rank restarts every role from the latest checkpoint, redoing at
    most save_every steps, the restart naming role, rank, pid and phase; (e) once the restart has trained a step, a
    SIGSTOPped actor rank stalls its phase for method.ppo.phase_timeout_s and, the restart used, fails the run,
    summary.json naming the stalled rank, its pid and phase, its stacks in hang/."""
    run_dir, log = tmp_path / "run", tmp_path / "run.log"
    process = launcher(f"launcher.run_dir={run_dir}", *PPO, NO_WANDB, "train.max_failures=1",
                       f"train.max_steps={STEPS + 2}", "method.ppo.phase_timeout_s=20", log=log)
    _wait_for(lambda: _latest(run_dir) >= SAVE_EVERY, "the first checkpoint", process)
    saved, killed = _latest(run_dir), _pid(run_dir, "critic", 1)
    logged = max(r["step"] for r in metrics(run_dir))
    os.kill(killed, signal.SIGKILL)
    _wait_for(lambda: "restarting every role" in log.read_text() and _pid(run_dir, "critic", 1) != killed,
              "the restart", process)
    assert logged - saved <= SAVE_EVERY  # the steps lost
    restarted_at = max(r["step"] for r in metrics(run_dir))
    _wait_for_step(run_dir, restarted_at + 1, process)  # the restarted roles train
    stopped = _pid(run_dir, "actor", 1)
    os.kill(stopped, signal.SIGSTOP)
    try:
        assert process.wait(timeout=120) == 1, log.read_text()[-3000:]
    finally:  # never leave a stopped process behind
        with contextlib.suppress(ProcessLookupError):
            os.kill(stopped, signal.SIGCONT)
            os.kill(stopped, signal.SIGKILL)

    output, summary = log.read_text(), _summary(run_dir)
    assert re.search(rf"error: role \w+ rank 1 \(node [\d.]+, pid {killed}\) died during phase \w+: .+; restarting "
                     r"every role from the latest checkpoint \(restart 1 of train.max_failures=1\)", output), output
    assert output.count(f"step 1/{STEPS + 2} ") == 1, "the restart resumed from the checkpoint"
    steps = [r["step"] for r in metrics(run_dir)]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) > restarted_at, "every step logged once"
    assert summary["status"] == "failed" and summary["restarts"] == 1
    assert re.match(rf"role \w+ rank 1 \(node [\d.]+, pid {stopped}\) stalled in phase \w+ for 20 s "
                    r"\(method\.ppo\.phase_timeout_s\); ", summary["error"]), summary["error"]
    assert (run_dir / "hang").is_dir()
