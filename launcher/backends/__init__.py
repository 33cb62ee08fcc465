"""Where a validated, planned job runs: Ray (embedded, existing, or brought up by a Slurm job) and Slurm's sbatch."""
