"""Which processes a test started: a marker in the environment that every child inherits (Ray's daemons and workers,
Slurm jobs through sbatch's exported environment), so a test checks and stops only its own processes, never another
Ray running beside it on the machine, nor defunct ones."""

import contextlib
import os

MARK = "BELLE_TEST_MARK"
"""Set to a fresh value per test (monkeypatch.setenv(MARK, uuid4().hex))."""


def own_processes(names: tuple[str, ...]) -> list[str]:
    """"pid command line" of the live processes started under this test's marker whose command line holds a name."""
    import psutil

    mark, found = os.environ.get(MARK), []
    for process in psutil.process_iter(["pid", "cmdline", "status"]):
        with contextlib.suppress(psutil.Error):
            line = f"{process.pid} {' '.join(process.info['cmdline'] or [])}"
            if (process.info["status"] != psutil.STATUS_ZOMBIE and any(name in line for name in names)
                    and process.environ().get(MARK) == mark):
                found.append(line)
    return found
