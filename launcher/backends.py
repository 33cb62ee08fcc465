"""Where a validated, planned job goes: local embedded Ray, an existing Ray cluster, or Slurm."""

from pathlib import Path

from belle.config import JobConfig


def submit(job: JobConfig, plan: dict, run_dir: Path) -> None:
    """Start the job on ``job.cluster``."""
    raise ValueError(
        f"cluster={job.cluster.kind}: this version validates and plans jobs but cannot train them yet: "
        "use launcher.dry_run=true (plan) or launcher.preview=N (samples)"
    )
