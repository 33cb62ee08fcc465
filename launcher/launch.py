"""Start a planned job, then record how it ended: summary.json and loss.png in the run directory."""

import json
from pathlib import Path

from belle.config import JobConfig
from launcher.rundir import write_atomic


def read_summary(run_dir: Path) -> dict | None:
    """The run's summary.json, or None before its first attempt ended."""
    path = run_dir / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


def launch(job: JobConfig, run_dir: Path) -> dict:
    """Train ``job`` (resuming the run in ``run_dir`` if there is one) and write its summary; a completed run is
    never trained again."""
    from belle.monitor.plot import plot_loss
    from launcher.backends import submit

    previous = read_summary(run_dir)
    if previous and previous["status"] == "completed":
        print(f"{run_dir} holds a completed run ({previous['steps']} steps): nothing to do")
        return previous
    summary = submit(job, run_dir)
    write_atomic(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    plot = plot_loss(run_dir)
    print(f"{summary['status']}: {summary['steps']} steps, loss {summary['final_loss']}, "
          f"{summary['wall_time_s']} s; run dir {run_dir}" + (f", loss curve {plot}" if plot else ""))
    if summary["status"] != "completed":
        raise RuntimeError(f"the run failed: {summary['error']} (see {run_dir})")
    return summary
