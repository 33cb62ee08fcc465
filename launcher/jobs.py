"""``python -m launcher.jobs list | status JOB | logs JOB [-f] | cancel JOB``: the Slurm jobs submitted from here
(launcher.backends.slurm.jobs)."""

from launcher.backends.slurm.jobs import main

if __name__ == "__main__":
    main()
