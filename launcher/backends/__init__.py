"""Where a validated, planned job runs: an embedded local Ray, an existing Ray cluster, or Slurm."""

from pathlib import Path

from belle.config import JobConfig


def submit(job: JobConfig, run_dir: Path) -> dict:
    """Run ``job`` on ``job.cluster`` and return its summary (what summary.json holds)."""
    if job.cluster.kind == "slurm":
        raise ValueError("cluster=slurm is not available in this version: use cluster=local or cluster=ray")
    from launcher.backends.ray_train import run_on_ray

    return run_on_ray(job, run_dir)
