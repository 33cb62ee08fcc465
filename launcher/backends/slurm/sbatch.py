"""cluster=slurm: render the sbatch script of a job from cluster/slurm/ray_job.sbatch.j2 into its run directory and
submit it. Inside the allocation the script brings up Ray (launcher.backends.slurm.node) and runs one attempt of
the run against it (launcher.backends.slurm.driver).

Everything the user typed that reaches the script is inert there: shell values are quoted with shlex, sbatch option
values are either checked names (belle.config.cluster) or double-quoted the way sbatch parses ``#SBATCH`` lines,
and the job name is reduced to safe characters. Secrets never enter it: the job inherits the submitting
environment from sbatch (WANDB_API_KEY and the like), nothing is copied into the file.
"""

import json
import re
import shlex
import subprocess
import sys
from importlib import resources
from pathlib import Path

from belle.config import JobConfig
from belle.rundir import SLURM_HEAD_INFO, SLURM_LOG, SLURM_NODE_EXIT, SLURM_SCRIPT, SUMMARY, write_atomic


def log_path(run_dir: Path, job_id: str) -> Path:
    """The job's log (every attempt appends to it)."""
    return run_dir / SLURM_LOG.replace("%j", job_id)


def _sbatch_value(value: str) -> str:
    """A value for an ``#SBATCH`` line, read by sbatch itself (no shell): double-quoted, with \\ and " escaped."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def check_output_path(run_dir: Path) -> None:
    """Refuse a run directory Slurm's --output would misread (checked before any file is written)."""
    text = str(run_dir)
    if any(c in text for c in "%\n\r"):
        raise ValueError(
            f"launcher.run_dir={text!r} has a % or a line break, which Slurm's --output reads as a pattern: "
            "set launcher.run_dir to a path without them"
        )


def render(job: JobConfig, run_dir: Path) -> str:
    """The sbatch script of ``job`` (run directory ``run_dir``)."""
    import jinja2

    check_output_path(run_dir)
    env = jinja2.Environment(
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, undefined=jinja2.StrictUndefined
    )
    env.filters["sh"] = lambda value: shlex.quote(str(value))
    env.filters["sbatch_path"] = lambda value: _sbatch_value(str(value))
    env.filters["json_text"] = lambda value: json.dumps(str(value))[1:-1]  # inside a JSON string the script writes
    template = (resources.files("launcher.cluster") / "slurm" / "ray_job.sbatch.j2").read_text()
    c = job.cluster
    return env.from_string(template).render(
        c=c,
        name=re.sub(r"\s+", " ", job.launcher.name),  # inside a comment: no line break may end it
        job_name=re.sub(r"[^A-Za-z0-9_.-]", "_", job.launcher.name)[:64],
        cpus=c.slurm_cpus_per_node,
        run_dir=run_dir,
        script_path=shlex.quote(str(run_dir / SLURM_SCRIPT)),
        log_pattern=run_dir / SLURM_LOG,
        summary=SUMMARY,
        head_info=SLURM_HEAD_INFO.format(job_id="$SLURM_JOB_ID"),
        node_exit=SLURM_NODE_EXIT.format(job_id="$SLURM_JOB_ID", node="*"),
        python=c.python or sys.executable,
    )


def write_script(job: JobConfig, run_dir: Path) -> Path:
    """Render the script into ``run_dir/slurm/job.sbatch`` (written whole) and return its path."""
    script = run_dir / SLURM_SCRIPT
    write_atomic(script, render(job, run_dir))
    script.chmod(0o755)
    return script


SBATCH_TIMEOUT_S = 60
"""Seconds sbatch may take to answer (it only talks to slurmctld)."""


def _sbatch(*args: str, script: str | None = None) -> subprocess.CompletedProcess:
    """``sbatch ARGS`` (the script on stdin when ``script`` is given), answered within SBATCH_TIMEOUT_S."""
    try:
        return subprocess.run(["sbatch", *args], input=script, capture_output=True, text=True,
                              timeout=SBATCH_TIMEOUT_S)
    except FileNotFoundError:
        raise RuntimeError("sbatch is not on PATH: run on a Slurm login node (or start cluster/dev/start.sh)") from None
    except subprocess.TimeoutExpired:
        raise RuntimeError(
            f"sbatch did not answer within {SBATCH_TIMEOUT_S} s: is slurmctld up (scontrol ping)?"
        ) from None


def _reason(done: subprocess.CompletedProcess) -> str:
    """Slurm's reason for refusing, on one line (its lines without their ``sbatch: error:`` prefixes)."""
    lines = (done.stderr.strip() or done.stdout.strip()).splitlines()
    reasons = [re.sub(r"^(sbatch: error: |allocation failure: )", "", line.strip()) for line in lines if line.strip()]
    return "; ".join(dict.fromkeys(reasons)) or "no message"


def check_runnable(job: JobConfig, script: str) -> None:
    """Refuse in one line a job Slurm could never start (more nodes, CPUs or GPUs than the partition has, a
    partition, account or QOS it does not know), asking ``sbatch --test-only`` before anything is queued: a real
    submit would be accepted and pend forever."""
    done = _sbatch("--test-only", script=script)
    if done.returncode != 0:
        c = job.cluster
        raise ValueError(
            f"Slurm would not run this job: {_reason(done)} (sbatch --test-only; cluster.nodes={c.nodes}, "
            f"{c.slurm_cpus_per_node} CPUs and {c.gpus_per_node} GPUs per node, cluster.partition="
            f"{c.partition or '<default>'}): set cluster.nodes, cluster.partition (or cluster.account / qos / "
            "constraint) and cluster.gpus_per_node / cpus_per_node to what `sinfo -N -l` shows"
        )


def submit(job: JobConfig, run_dir: Path) -> str:
    """Submit the job's script with sbatch (which returns at once) and record it; return the Slurm job id. A job
    Slurm could never start is refused first (check_runnable), with no script written."""
    from launcher.backends.slurm import jobs

    check_runnable(job, render(job, run_dir))
    script = write_script(job, run_dir)
    done = _sbatch("--parsable", str(script))
    if done.returncode != 0:
        raise RuntimeError(f"sbatch refused the job: {_reason(done)} (script: {script})")
    job_id = done.stdout.strip().split(";")[0]
    log = log_path(run_dir, job_id)
    jobs.record(job_id, job.launcher.name, run_dir, log)
    print(f"submitted  Slurm job {job_id}\nlog        {log}\nfollow     python -m launcher.jobs logs {job_id} -f")
    return job_id
