"""The hang watchdog on real processes (no Ray): heartbeats, py-spy stacks, the stalled rank named, all killed."""

import subprocess
import sys
import time

import pytest

from launcher.watchdog import HangWatchdog

RANK = """
import sys, time
from belle.heartbeat import Heartbeat

def barrier():  # where a healthy rank waits for a stalled one
    while True:
        time.sleep(0.05)

beat, pause = Heartbeat(sys.argv[1], int(sys.argv[2]), 0), float(sys.argv[3])
for step in range(1, int(sys.argv[4]) + 1):
    time.sleep(pause)
    beat(step)
barrier()
"""


def _rank(run_dir, rank: int, pause: float, steps: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", RANK, str(run_dir), str(rank), str(pause), str(steps)])


def _until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _step(run_dir, rank: int) -> int:
    from belle.heartbeat import read_heartbeats

    return read_heartbeats(run_dir).get(rank, {}).get("step", -1)


def test_a_stopped_rank_is_named_with_every_stack_and_all_ranks_are_stopped(tmp_path):
    ranks = [_rank(tmp_path, 0, 0.1, 3), _rank(tmp_path, 1, 0.1, 1000)]
    try:
        with HangWatchdog(tmp_path, timeout_s=4, first_step_s=60, poll_s=0.2) as watchdog:
            _until(lambda: _step(tmp_path, 0) == 3 and _step(tmp_path, 1) >= 3, 30, "ranks never started")
            ranks[1].send_signal(19)  # SIGSTOP: rank 1 hangs mid-run, rank 0 waits in barrier()
            _until(lambda: watchdog.hang is not None, 30, "the hang was not detected")
        for process in ranks:
            assert process.wait(timeout=30) == -9  # killed, stopped or not
    finally:
        for process in ranks:
            process.kill()
            process.wait()
    line = watchdog.hang
    assert line.startswith("hang: no rank finished a step for 4 s: stalled rank 1 on ") and "(pid" in line
    assert "rank 0 " not in line and "raise train.hang_timeout_s" in line
    stacks = {path.name.split("-rank-")[1]: path.read_text() for path in (tmp_path / "hang").iterdir()}
    assert set(stacks) == {"0.txt", "1.txt"}
    assert "barrier" in stacks["0.txt"] and "process stopped" in stacks["1.txt"]


def test_slow_but_progressing_ranks_are_never_flagged(tmp_path):
    ranks = [_rank(tmp_path, rank, 0.5, 6) for rank in (0, 1)]
    try:
        with HangWatchdog(tmp_path, timeout_s=4, first_step_s=60, poll_s=0.2) as watchdog:
            _until(lambda: min(_step(tmp_path, 0), _step(tmp_path, 1)) == 6, 60, "ranks did not finish")
        assert watchdog.hang is None
    finally:
        for process in ranks:
            process.kill()
            process.wait()


@pytest.mark.parametrize("started", [False, True])
def test_the_first_step_has_its_own_allowance(tmp_path, started):
    """A rank that never finishes its first step is flagged after hang_first_step_s, naming that key."""
    rank = _rank(tmp_path, 0, 0.1, 1 if started else 0)
    try:
        with HangWatchdog(tmp_path, timeout_s=1 if started else 60, first_step_s=60 if started else 1,
                          poll_s=0.2) as watchdog:
            _until(lambda: watchdog.hang is not None, 30, "the hang was not detected")
        key = "train.hang_timeout_s" if started else "train.hang_first_step_s"
        what = "step" if started else "first step"
        assert watchdog.hang.startswith(f"hang: no rank finished a {what} for 1 s: stalled rank 0 ")
        assert f"raise {key}" in watchdog.hang
    finally:
        rank.kill()
        rank.wait()


def test_heartbeats_left_by_ranks_that_died_are_a_restart_not_a_hang(tmp_path):
    """The backend replaces a failed group: the old ranks' beats outlive them until the new ranks write theirs.
    Past the allowance the watchdog finds every process gone, drops the stale beats, and dumps or names nothing."""
    ranks = [_rank(tmp_path, rank, 0.1, 2) for rank in (0, 1)]
    with HangWatchdog(tmp_path, timeout_s=1, first_step_s=60, poll_s=0.2) as watchdog:
        _until(lambda: min(_step(tmp_path, 0), _step(tmp_path, 1)) == 2, 30, "ranks never started")
        for process in ranks:
            process.kill()
            process.wait()
        _until(lambda: not (tmp_path / "progress").exists(), 30, "the stale heartbeats were kept")
    assert watchdog.hang is None and not (tmp_path / "hang").exists()
