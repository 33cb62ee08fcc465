"""cluster=slurm: the sbatch script (sbatch), one Ray node per Slurm node (node), the driver's view of that Ray
(ray_join), and the records of submitted jobs (jobs, the ``python -m launcher.jobs`` command)."""
