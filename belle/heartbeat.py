"""Each rank's progress, rewritten after every optimizer step: what the launcher's hang watchdog reads.

``<run_dir>/progress/rank-N.json`` holds the rank, its process id and host, the step this attempt started from and
the last step it finished. One small file write per step: no collective, no measurable cost.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from belle.rundir import PROGRESS, write_atomic


class Heartbeat:
    """This rank's heartbeat file."""

    def __init__(self, run_dir: Path, rank: int, start: int):
        """Written at once with ``start``, the step this attempt resumes from (0 for a new run)."""
        self.path = Path(run_dir) / PROGRESS / f"rank-{rank}.json"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fields = {"rank": rank, "pid": os.getpid(), "node": socket.gethostname(), "start": start}
        self(start)

    def __call__(self, step: int) -> None:
        """Record that ``step`` is done (replaced whole: a reader never sees half a file)."""
        write_atomic(self.path, json.dumps(self.fields | {"step": step}))


def read_heartbeats(run_dir: Path) -> dict[int, dict]:
    """The heartbeat of every rank that has written one, by rank."""
    beats = {}
    for path in (Path(run_dir) / PROGRESS).glob("rank-*.json"):
        try:
            beat = json.loads(path.read_text())
        except (OSError, ValueError):  # replaced or removed while read: the next poll sees it
            continue
        beats[beat["rank"]] = beat
    return beats
