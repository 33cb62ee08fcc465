"""Where a validated, planned job runs: where Ray comes from (ray_cluster: embedded, existing, or brought up by a
Slurm job), what runs on it (spmd: one worker group of an SPMD recipe), and Slurm's side (slurm/)."""
