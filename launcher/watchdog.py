"""The hang watchdog: a run whose ranks all stop advancing becomes a named failure instead of a silent wait.

It runs in the launcher beside the training workers and reads their heartbeats (belle.heartbeat). When no rank has
finished a step for ``train.hang_timeout_s`` (``train.hang_first_step_s`` until the first step of an attempt is done:
model loading, compilation), it writes every rank's Python stack (py-spy) to ``<run_dir>/hang/``, names the stalled
rank(s), their node and step in one line, and kills every rank's process. The worker group then fails: the backend
(launcher.backends.spmd) restarts it from the latest checkpoint within ``train.max_failures``, or the run fails
with that line.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from belle.heartbeat import read_heartbeats
from belle.rundir import HANG, PROGRESS

COLLECTIVES = ("all_reduce", "allreduce", "barrier", "broadcast", "all_gather", "reduce_scatter", "wait")
"""Words in a stack that show a rank waiting for the others (not the one they wait for)."""


class HangWatchdog:
    """Watch ``run_dir``'s heartbeats on a background thread; ``hang`` is the line of the last hang detected."""

    def __init__(self, run_dir: Path, timeout_s: float, first_step_s: float, poll_s: float = 1.0,
                 on_node: Callable[[str, Callable, tuple], object] | None = None):
        self.run_dir, self.timeout_s, self.first_step_s, self.poll_s = Path(run_dir), timeout_s, first_step_s, poll_s
        self.on_node = on_node or _here
        self.hang: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="hang-watchdog", daemon=True)

    def __enter__(self) -> HangWatchdog:
        shutil.rmtree(self.run_dir / PROGRESS, ignore_errors=True)  # a previous attempt's ranks are gone
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        seen: dict[int, tuple[int, int]] = {}  # rank -> (pid, step) as last read
        advanced = time.monotonic()
        while not self._stop.wait(self.poll_s):
            beats = read_heartbeats(self.run_dir)
            for rank, beat in beats.items():
                if seen.get(rank) != (beat["pid"], beat["step"]):
                    seen[rank], advanced = (beat["pid"], beat["step"]), time.monotonic()
            started = any(beat["step"] > beat["start"] for beat in beats.values())  # a step done this attempt
            allowance = self.timeout_s if started else self.first_step_s
            if beats and time.monotonic() - advanced > allowance:
                hang = self._act(beats, allowance, started)
                if hang:
                    print(f"error: {hang}", file=sys.stderr, flush=True)
                shutil.rmtree(self.run_dir / PROGRESS, ignore_errors=True)  # the next attempt's ranks write their own
                seen.clear()
                advanced = time.monotonic()

    def _act(self, beats: dict[int, dict], allowance: float, started: bool) -> str | None:
        """Stacks to hang/, the stalled ranks named in ``hang`` (set before any rank is killed, so whoever sees a rank
        die can read why), every rank killed; the one-line reason. None when every rank's process is gone already: the
        heartbeats are a failed attempt's, and the next one is starting."""
        found = {rank: self.on_node(beat["node"], inspect_process, (beat["pid"],)) for rank, beat in beats.items()}
        if all(state.startswith("gone") for state, _ in found.values()):
            return None
        folder = self.run_dir / HANG
        folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        suspects = []
        for rank, beat in sorted(beats.items()):
            state, stack = found[rank]
            (folder / f"{stamp}-rank-{rank}.txt").write_text(
                f"rank {rank}, pid {beat['pid']} on {beat['node']}, last finished step {beat['step']}, "
                f"process {state}\n\n{stack}"
            )
            waiting = any(word in stack for word in COLLECTIVES)
            if state in ("stopped", "tracing-stop") or not waiting:
                suspects.append((rank, beat, state))
        if not suspects:  # all wait in collectives: the ones behind are the ones the others wait for
            low = min(beat["step"] for beat in beats.values())
            suspects = [(rank, beat, "waiting") for rank, beat in sorted(beats.items()) if beat["step"] == low]
        named = "; ".join(f"rank {rank} on {beat['node']} (pid {beat['pid']}, {state}) after step {beat['step']}"
                          for rank, beat, state in suspects)
        key, what = ("train.hang_timeout_s", "step") if started else ("train.hang_first_step_s", "first step")
        self.hang = (f"hang: no rank finished a {what} for {allowance:g} s: stalled {named}; every rank's stack is in "
                     f"{folder}: fix the stall, or raise {key} if a step really takes that long")
        for beat in beats.values():
            self.on_node(beat["node"], kill_process, (beat["pid"],))
        return self.hang


def _here(node: str, action: Callable, args: tuple):
    """Run ``action`` on this host (the node of every rank of a single-machine run)."""
    return action(*args)


def inspect_process(pid: int) -> tuple[str, str]:
    """A process's state and its Python stack (py-spy, which reads a stopped process too)."""
    import psutil

    try:
        state = psutil.Process(pid).status()
    except psutil.Error as error:
        return f"gone ({type(error).__name__})", ""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    try:
        done = subprocess.run([py_spy, "dump", "--pid", str(pid)], capture_output=True, text=True, timeout=60)
        stack = done.stdout or done.stderr
    except (OSError, subprocess.TimeoutExpired) as error:
        stack = f"py-spy could not read the stack: {error}"
    return state, stack


def kill_process(pid: int) -> None:
    """SIGKILL a process (gone already: nothing to do)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def on_ray_node(node: str, action: Callable, args: tuple):
    """Run ``action`` on the Ray node whose host is ``node`` (py-spy and kill need the rank's own machine)."""
    if node == socket.gethostname():
        return action(*args)
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node_id = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeManagerHostname"] == node)
    task = ray.remote(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False))(action)
    return ray.get(task.remote(*args), timeout=120)
