"""Records of the Slurm jobs submitted from this machine, and what they are doing now:

    python -m launcher.jobs list                  every job: Slurm state, run status, steps, run directory
    python -m launcher.jobs status JOB            one job in full (JOB: a job id, or the run's name)
    python -m launcher.jobs logs JOB [-n N] [-f]  the last N lines of its log (-f: keep following it)
    python -m launcher.jobs cancel JOB            scancel it (the run keeps its checkpoints; resubmit to resume)

Records are lines of ``$BELLE_HOME/jobs.jsonl`` (default ``~/.belle``); the Slurm state comes from ``scontrol``,
the run status from the run directory's summary.json.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from belle.rundir import read_summary, results


def records_file() -> Path:
    """Where job records are kept."""
    return Path(os.environ.get("BELLE_HOME", Path.home() / ".belle")).expanduser() / "jobs.jsonl"


def record(job_id: str, name: str, run_dir: Path, log: Path) -> None:
    """Remember a submitted job (one appended line, so concurrent submissions never lose one)."""
    path = records_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    line = {"job_id": job_id, "name": name, "run_dir": str(run_dir), "log": str(log),
            "submitted": time.strftime("%Y-%m-%d %H:%M:%S")}
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(line, ensure_ascii=False) + "\n")


def records() -> list[dict]:
    """Every recorded job, oldest first; a damaged line (a write cut short) is skipped with a warning naming it."""
    path = records_file()
    found = []
    for number, line in enumerate(path.read_text().splitlines() if path.is_file() else [], 1):
        try:
            if line.strip():
                found.append(json.loads(line))
        except json.JSONDecodeError as exc:
            print(f"warning: {path}:{number} is not a job record ({exc.msg}), skipped: repair or delete that line",
                  file=sys.stderr)
    return found


def find(key: str) -> dict:
    """The newest record whose job id or run name is ``key``."""
    for entry in reversed(records()):
        if key in (entry["job_id"], entry["name"]):
            return entry
    raise ValueError(f"no job {key!r} was submitted from here ({records_file()}): `python -m launcher.jobs list`")


ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
         "PREEMPTED")
"""Slurm job states after which the job no longer touches its run directory (a requeued job shows PENDING)."""


def check_run_dir_is_free(run_dir: Path) -> None:
    """Refuse a run directory that a job submitted from here still uses (pending, running, requeued)."""
    for entry in records():
        if Path(entry["run_dir"]) == run_dir:
            state = slurm_state(entry["job_id"]).get("JobState")
            if state and state not in ENDED:
                raise ValueError(
                    f"launcher.run_dir={run_dir} is in use by Slurm job {entry['job_id']} ({state}): wait for it, "
                    f"cancel it (python -m launcher.jobs cancel {entry['job_id']}) or set another launcher.run_dir"
                )


def slurm_state(job_id: str) -> dict:
    """JobState, Reason, Restarts, NodeList … of a job as scontrol shows it; {} once Slurm has forgotten it."""
    done = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True)
    if done.returncode != 0 or not done.stdout.strip():
        return {}
    fields = {}
    for part in done.stdout.split():
        key, sep, value = part.partition("=")
        if sep:
            fields[key] = value
    return fields


def _row(entry: dict) -> dict:
    state = slurm_state(entry["job_id"])
    summary = read_summary(Path(entry["run_dir"])) or {}
    return {
        "job": entry["job_id"], "name": entry["name"], "slurm": state.get("JobState", "gone"),
        "run": summary.get("status", "-"), "steps": summary.get("steps", "-"), "run_dir": entry["run_dir"],
    }


def list_jobs() -> None:
    rows = [_row(e) for e in records()]
    if not rows:
        print(f"no jobs recorded in {records_file()}")
        return
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in rows[0]}
    print("  ".join(k.ljust(w) for k, w in widths.items()))
    for r in rows:
        print("  ".join(str(r[k]).ljust(w) for k, w in widths.items()))


def status(key: str) -> None:
    entry = find(key)
    state = slurm_state(entry["job_id"])
    summary = read_summary(Path(entry["run_dir"]))
    print(f"job        {entry['job_id']} ({entry['name']}), submitted {entry['submitted']}")
    if state:
        print(f"slurm      {state.get('JobState')} (reason {state.get('Reason')}), restarts {state.get('Restarts')}, "
              f"nodes {state.get('NodeList')}, time {state.get('RunTime')} of {state.get('TimeLimit')}")
    else:
        print("slurm      gone (Slurm no longer lists it)")
    if summary:
        told = [f"{summary['steps']} steps", results(summary), summary.get("error") and f"error: {summary['error']}"]
        print(f"run        {summary['status']}: {', '.join(part for part in told if part)}")
    else:
        print("run        no attempt has ended yet")
    print(f"run dir    {entry['run_dir']}\nlog        {entry['log']}")


def logs(key: str, lines: int, follow: bool) -> None:
    log = Path(find(key)["log"])
    if not log.is_file():
        print(f"{log} does not exist yet (the job has not started)")
        return
    subprocess.run(["tail", f"-n{lines}", *(["-F"] if follow else []), str(log)])


def cancel(key: str) -> None:
    entry = find(key)
    done = subprocess.run(["scancel", entry["job_id"]], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"scancel {entry['job_id']} failed: {done.stderr.strip()}")
    print(f"cancelled Slurm job {entry['job_id']} ({entry['name']}); its checkpoints stay in {entry['run_dir']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m launcher.jobs", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="every recorded job")
    for name in ("status", "logs", "cancel"):
        sub = commands.add_parser(name)
        sub.add_argument("job", help="Slurm job id or run name")
        if name == "logs":
            sub.add_argument("-n", "--lines", type=int, default=40)
            sub.add_argument("-f", "--follow", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            list_jobs()
        elif args.command == "status":
            status(args.job)
        elif args.command == "logs":
            logs(args.job, args.lines, args.follow)
        else:
            cancel(args.job)
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2 if isinstance(exc, ValueError) else 1)


if __name__ == "__main__":
    main()
