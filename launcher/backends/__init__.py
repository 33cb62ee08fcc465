"""Where a validated, planned job runs: where Ray comes from (ray_cluster: embedded, existing, or brought up by a
Slurm job), what runs on it (spmd: one worker group of an SPMD recipe; pools: a driver recipe's placed pools, called
through pool_calls; each ``run`` returning an Outcome), and Slurm's side (slurm/: sbatch, the job's attempt driver,
the nodes' Ray, job records)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    """How a backend's ``run`` ended, for summary.json."""

    error: str | None = None
    """Why training failed, in one line; None: it completed, or stopped on request or on its own."""
    restarts: int | None = None
    """Times the workers were rebuilt from the latest checkpoint (within train.max_failures); None: not counted."""
    note: str | None = None
    """Why training stopped early on its own (e.g. a KL bound reached: ``KL 12.3 > … at step 7``)."""
