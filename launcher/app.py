"""The Hydra application: compose → validate (typed) → plan → write run files → preview, dry run or launch."""

import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from launcher.store import register

register()


def run(cfg: DictConfig) -> Path:
    """Validate and plan the composed job before any cluster resource is taken; return its run directory."""
    from belle.config import job_dict
    from launcher.compose import run_dir, to_job
    from launcher.inspect_data import inspect_data
    from launcher.plan import make_plan
    from launcher.report import describe
    from launcher.rundir import check_reusable, write_run_files

    job = to_job(cfg)
    launching = not job.launcher.dry_run and not job.launcher.preview
    if not job.launcher.dry_run:
        from belle.model.architecture import check_model_path

        check_model_path(job.model)
    facts, warnings = inspect_data(job, strict=not job.launcher.dry_run)
    plan = make_plan(job, facts, warnings)
    directory = run_dir(job)
    config = job_dict(job)
    check_reusable(directory, config)
    write_run_files(directory, config, plan)
    print(describe(plan))
    print(f"run dir    {directory}")
    if job.launcher.preview:
        from launcher.preview import preview

        preview(job, directory / "preview.jsonl")
    elif launching:
        from launcher.launch import launch

        launch(job, directory)
    return directory


_TRACEBACKS = os.environ.get("HYDRA_FULL_ERROR") == "1"
"""The user asked for full tracebacks; otherwise every error is one line on stderr and exit code 2."""


def _fail(exc: BaseException, code: int = 2) -> None:
    """One line on stderr; exit code 2 for a bad job, 1 for a run that failed."""
    from launcher.errors import explain

    if _TRACEBACKS:
        raise exc
    print(f"error: {explain(exc)}", file=sys.stderr)
    sys.exit(code)


@hydra.main(config_path="pkg://launcher.conf", config_name="config", version_base="1.3")
def _hydra_app(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except ValueError as exc:  # inside the job: reported here, before Hydra adds its own banner
        _fail(exc)
    except RuntimeError as exc:
        _fail(exc, code=1)


def main() -> None:
    """Entry point of ``python -m launcher``."""
    os.environ["HYDRA_FULL_ERROR"] = "1"  # composition errors reach us instead of Hydra's multi-line report
    try:
        _hydra_app()
    except (ValueError, hydra.errors.HydraException) as exc:
        _fail(exc)
