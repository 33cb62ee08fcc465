"""PPO's state between steps and across attempts: the run's step count, the controller's state in a checkpoint
(controller.json) and the checks that refuse a resume the saved roles cannot continue."""

import hashlib
import json
from pathlib import Path

from belle.config import JobConfig
from belle.config._checks import require
from belle.config.ppo import TRAINED_ROLES, frozen_roles, ppo_settings, role_model_source, zero_stage
from belle.data.records import iter_records, resolve_paths
from belle.rundir import CONTROLLER


def ppo_steps(job: JobConfig, prompts: int) -> int:
    """PPO steps of the run: train.max_steps, else train.epochs passes over ``prompts`` prompts (whole steps)."""
    steps = job.train.max_steps or int(job.train.epochs * prompts) // ppo_settings(job).rollout_batch
    require(steps > 0, f"{prompts} prompts make no step of method.ppo.rollout_batch={ppo_settings(job).rollout_batch}:"
                       " set train.epochs higher or method.ppo.rollout_batch lower")
    return steps


def planned_steps(job: JobConfig) -> int:
    """PPO steps of the run as the roles see it before any prompt is read (the prompt records counted unless
    train.max_steps is set): their learning-rate schedules' length."""
    return ppo_steps(job, 0 if job.train.max_steps else sum(1 for _ in iter_records(job.data.path)))


def read_controller(folder: Path) -> dict:
    """The controller state saved in checkpoint ``folder``."""
    return json.loads((Path(folder) / CONTROLLER).read_text())


def check_resume(job: JobConfig, folder: Path, worlds: dict[str, int], prompts: str | None = None) -> None:
    """Refuse to resume checkpoint ``folder`` with a trained role on another world size or ZeRO stage (``worlds``:
    role → ranks), with other prompts than it was saved with (its prompt position would continue in other
    prompts; ``prompts``: their prompts_fingerprint where the caller has it), or with a frozen role's model folder
    changed since the save."""
    saved = read_controller(folder)
    for role in TRAINED_ROLES:
        check_resumable(saved, folder, role, worlds[role], zero_stage(job, role))
    was = saved.get("prompts")  # None: saved before prompts were fingerprinted
    require(
        was is None or was == (prompts or prompts_fingerprint(job)),
        f"checkpoint {Path(folder).name} was trained on the prompts of data.path={job.data.path} as they were then, "
        "but their files have changed since: put them back as they were to resume, or start a new run on the new "
        "prompts (launcher.run_dir=<a new folder>)",
    )
    now = frozen_fingerprints(job)
    for role, was in saved.get("frozen", {}).items():
        model, key = role_model_source(job, role)
        require(
            was == now.get(role),
            f"checkpoint {Path(folder).name} was saved with {key}={model.path} as it was then, but its config.json or "
            "weight files have changed since: put that folder back as it was, or start a new run "
            "(launcher.run_dir=<a new folder>)",
        )


def prompts_fingerprint(job: JobConfig) -> str:
    """SHA-256 of the bytes of data.path's files, in the order they are read: kept in controller.json so that a
    resume can tell prompts replaced since the save (a touched or copied file with the same bytes resumes)."""
    digest = hashlib.sha256()
    for path in resolve_paths(job.data.path):
        with open(path, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def frozen_fingerprints(job: JobConfig) -> dict[str, dict | None]:
    """Each frozen role's model folder as it is now (belle.model.architecture.folder_fingerprint; None: built from
    the architecture numbers), kept in controller.json so that a resume can tell a changed folder."""
    from belle.model.architecture import folder_fingerprint

    models = {role: role_model_source(job, role)[0] for role in frozen_roles(job)}
    return {role: folder_fingerprint(model.path) if model.path else None for role, model in models.items()}


def check_resumable(saved: dict, folder: Path, role: str, world: int, stage: int) -> None:
    """Refuse to resume a trained role on another world size or ZeRO stage than it was saved with."""
    if role not in TRAINED_ROLES:
        return  # frozen roles keep nothing in a checkpoint
    was = saved["roles"][role]
    require(
        (was["world"], was["zero_stage"]) == (world, stage),
        f"checkpoint {Path(folder).name} holds roles.{role} saved on {was['world']} ranks with ZeRO-{was['zero_stage']}"
        f", but this run places it on {world} ranks with ZeRO-{stage}: place it as before (roles.{role}.zero_stage="
        f"{was['zero_stage']}, {was['world']} workers) or start a new run (launcher.run_dir=<a new folder>)",
    )
