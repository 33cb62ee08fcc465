"""The Hydra application: compose → validate (typed) → plan → write run files → preview, dry run, launch or submit.

A sweep (``-m``) is composed and checked twice: first every point is validated and planned without writing
anything, then the points run (cluster=local: one after another) or are submitted (cluster=slurm: one job each),
so a bad point is reported before any point takes a cluster resource.
"""

import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import hydra
from omegaconf import DictConfig

from belle import rundir
from belle.config import JobConfig
from belle.config._checks import require
from belle.recipes import recipe
from launcher.store import register
from launcher.sweep import Point, no_points_message

register()


@dataclass
class SweepPass:
    """Where a sweep (``-m``) stands; Hydra calls the app once per point, so the app reads it from ``_sweep``."""

    checking: bool = False
    """The first pass over the points: validate and plan them, write and start nothing."""
    failed: list[str] = field(default_factory=list)
    """Points whose run failed (the sweep goes on with the others, then exits 1)."""
    points: int = 0
    """Points the first pass checked."""
    evaluated: list[Path] = field(default_factory=list)
    """Run dirs of the closing evaluations that ran (a sweep ends by printing their table)."""


_sweep = SweepPass()


def run(cfg: DictConfig) -> Path:
    """Validate and plan the composed job before any cluster resource is taken; return its run directory."""
    from launcher.compose import run_dir, to_job
    from launcher.sweep import current_point

    job = to_job(cfg)
    point = current_point()
    if point:
        job = point.place(job, run_dir(job))
    return _run(job, point, _command_line_keys())


def _run(job: JobConfig, point: Point | None, command_line: set[str]) -> Path:
    """``run`` for a typed job: checked, planned, its files written, then started; the job its recipe says follows
    it (a training job's closing evaluation) is checked first and runs once it completes."""
    from belle.config import job_dict
    from launcher.claim import check_run_dir, launching, write_run_files
    from launcher.compose import path_fields, run_dir
    from launcher.inspect_data import inspect_data
    from launcher.plan import make_plan
    from launcher.report import describe

    directory = run_dir(job)
    face = recipe(job.method.name)
    face.check(job, command_line, directory)
    after = face.follow_up(job, directory)  # refused now, before a GPU hour is spent, if it could not run
    facts, warnings = inspect_data(job, strict=not job.launcher.dry_run)
    if after is not None:
        warnings.append(f"once it completes, its export is evaluated on {after.data.path} ({after.launcher.run_dir})")
    from launcher.backends.ray_cluster import check_local_machine

    if job.launcher.launches:
        from belle.monitor.wandb_run import check_wandb
        from launcher.backends.ray_cluster import check_ray_cluster

        check_wandb(job.monitor.wandb_mode)
        check_local_machine(job.cluster)
        if job.cluster.kind == "ray":
            check_ray_cluster(job)
    else:
        try:
            check_local_machine(job.cluster)
        except ValueError as refused:  # the plan says so; a launch would stop here
            warnings.append(f"a launch would be refused: {refused}")
    plan = make_plan(job, facts, warnings)
    config = job_dict(job)
    check_run_dir(directory, config, {key: several for _, _, key, several in path_fields(job)})
    if job.cluster.kind == "slurm":
        from launcher.backends.slurm.jobs import check_run_dir_is_free
        from launcher.backends.slurm.sbatch import check_output_path

        check_output_path(directory)
        if job.launcher.launches:
            check_run_dir_is_free(directory)
    if _sweep.checking:
        _sweep.points += 1
        return directory
    with launching(directory):  # one launcher at a time; a refusal inside leaves the directory as it was
        write_run_files(directory, config, plan)
        print(describe(plan))
        print(f"run dir    {directory}")
        _start(job, directory, point)
    if after is not None and job.launcher.launches and job.cluster.kind != "slurm":
        print(f"\n{job.launcher.name} completed: its closing evaluation follows", flush=True)
        _sweep.evaluated.append(_run(after, None, set()))
    return directory


def _command_line_keys() -> set[str]:
    """The config keys set on this command line (``+``/``++``/``~`` stripped)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return set()
    return {override.split("=", 1)[0].lstrip("+~") for override in HydraConfig.get().overrides.task}


def _start(job: JobConfig, directory: Path, point: Point | None) -> None:
    """Prepare the data, preview, render (dry run with cluster=slurm), submit to Slurm, or train here; a sweep point
    is recorded."""
    from launcher.sweep import record_point

    if job.launcher.prepare:
        recipe(job.method.name).prepare(job, None)
    elif job.launcher.preview:
        from launcher.preview import preview

        preview(job, directory / rundir.PREVIEW)
    elif job.cluster.kind == "slurm":
        from launcher.backends.slurm import sbatch

        if job.launcher.launches:
            job_id = sbatch.submit(job, directory)
            if point:
                record_point(point, directory, job_id=job_id, status="submitted")
        else:
            script = sbatch.write_script(job, directory)
            print(f"sbatch script (not submitted) {script}:\n\n{script.read_text()}")
    elif job.launcher.launches:
        from launcher.launch import graceful_stop, launch

        try:
            with graceful_stop(directory):
                launch(job, directory)
        finally:
            if point:
                record_point(point, directory, status=(rundir.read_summary(directory) or {}).get("status", "failed"))


_TRACEBACKS = os.environ.get("HYDRA_FULL_ERROR") == "1"
"""The user asked for full tracebacks; otherwise every error is one line on stderr and exit code 2."""


def _fail(exc: BaseException, code: int = 2) -> None:
    """One line on stderr; exit code 2 for a bad job, 1 for a run that failed, 75 for one stopped on request."""
    from launcher.errors import explain

    if _TRACEBACKS:
        raise exc
    print(f"error: {explain(exc)}", file=sys.stderr)
    sys.exit(code)


@hydra.main(config_path="pkg://launcher.conf", config_name="config", version_base="1.3")
def _hydra_app(cfg: DictConfig) -> None:
    from launcher.launch import EXIT_PREEMPTED, Preempted
    from launcher.sweep import current_point

    try:
        run(cfg)
    except ValueError as exc:  # inside the job: reported here, before Hydra adds its own banner
        point = current_point()
        if point is not None:
            from launcher.errors import explain

            exc = ValueError(f"sweep point {point.number} ({' '.join(point.overrides)}): {explain(exc)}")
        _fail(exc)
    except Preempted as exc:
        _fail(exc, code=EXIT_PREEMPTED)
    except RuntimeError as exc:
        point = current_point()
        if point is None:
            _fail(exc, code=1)
        print(f"error: point {point.number}: {exc}", file=sys.stderr)  # the sweep goes on with the next point
        _sweep.failed.append(str(point.number))


def main() -> None:
    """Entry point of ``python -m launcher``."""
    os.environ["HYDRA_FULL_ERROR"] = "1"  # composition errors reach us instead of Hydra's multi-line report
    try:
        _check_flags(sys.argv[1:])
        if {"-m", "--multirun"} & set(sys.argv[1:]):
            _check_sweep()
        _hydra_app()
    except (ValueError, hydra.errors.HydraException) as exc:
        _fail(exc)
    except AssertionError as exc:  # OmegaConf, asked to set a key inside a section that is null in this job
        if "Unexpected type" not in str(exc) or _TRACEBACKS:
            raise
        nested = [a.split("=")[0].lstrip("+~") for a in sys.argv[1:] if "=" in a and a.split("=")[0].count(".") >= 2]
        _fail(ValueError(
            f"an override sets a key inside a section this job leaves null ({', '.join(nested) or 'see the overrides'})"
            ": choose that section first, e.g. method=lora before method.lora.r=…, roles=colocate_all before "
            "roles.actor.…"
        ))
    if len(_sweep.evaluated) > 1:  # a sweep whose points evaluated their exports: the paper-style table
        from launcher.compare import main as compare

        print(f"\nthe sweep's evaluations ({len(_sweep.evaluated)}):", flush=True)
        compare([*map(str, _sweep.evaluated), "--out", str(Path(_sweep.evaluated[0]).parents[1])])
    if _sweep.failed:
        _fail(RuntimeError(f"sweep points {', '.join(_sweep.failed)} failed (see sweep.json)"), code=1)


def _check_flags(args: list[str]) -> None:
    """Refuse an option Hydra does not know in one line (Hydra's argparse would print its usage block)."""
    from hydra._internal.utils import get_args_parser

    _, unknown = get_args_parser().parse_known_args(args)
    if unknown:
        raise ValueError(
            f"unknown option {unknown[0]}: settings are key=value overrides; `python -m launcher --help` lists the "
            "options and config groups"
        )


def _check_sweep() -> None:
    """The sweep's first pass; Hydra's multirun.yaml goes to a scratch folder (Hydra's main reads only sys.argv)."""
    argv = list(sys.argv)
    with tempfile.TemporaryDirectory(prefix="belle-sweep-check-") as scratch:
        sys.argv.append(f"hydra.sweep.dir={scratch}")
        _sweep.checking = True
        try:
            _hydra_app()
        finally:
            _sweep.checking = False
            sys.argv[:] = argv
    require(_sweep.points > 0, no_points_message(argv[1:]))
