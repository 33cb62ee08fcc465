"""Cluster scripts that ship with the launcher: the Slurm job template (slurm/) and a development Slurm (dev/)."""
