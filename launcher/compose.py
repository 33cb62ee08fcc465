"""From a composed Hydra config to a typed, checked JobConfig."""

import dataclasses
import difflib
from collections.abc import Iterator
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from belle.config import JobConfig
from belle.config.paths import PATH, SEVERAL, absolute


def unknown_key_message(key: str, known: list[str]) -> str:
    """The error for a key no schema has, with the closest real key when there is one."""
    parent, _, leaf = key.rpartition(".")
    close = difflib.get_close_matches(leaf, known, n=1)
    hint = f" (did you mean {parent + '.' if parent else ''}{close[0]}?)" if close else ""
    return f"{key} is not a config key{hint}: fix the spelling; `python -m launcher --cfg job` lists every key"


def check_keys(node: DictConfig, prefix: str = "") -> None:
    """Reject keys a schema does not declare (Hydra lets ``+section.key=…`` add them to typed sections)."""
    schema = OmegaConf.get_type(node)
    known = [f.name for f in dataclasses.fields(schema)] if dataclasses.is_dataclass(schema) else None
    for key in node:
        path = f"{prefix}{key}"
        if known is not None and key not in known:
            raise ValueError(unknown_key_message(path, known))
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_none():
            check_keys(child, path + ".")


def to_job(cfg: DictConfig) -> JobConfig:
    """Check the keys, resolve interpolations and build the dataclasses (each ``__post_init__`` checks itself), then
    make every path absolute (``~`` expanded, relative ones from the directory the command started in), so
    config.yaml holds paths every process of the run can read."""
    check_keys(cfg)
    job = OmegaConf.to_object(cfg)
    if not isinstance(job, JobConfig):
        raise TypeError(f"expected the job_schema root, got {type(job).__name__}")
    for section, name, _, several in path_fields(job):
        setattr(section, name, absolute(getattr(section, name), Path.cwd(), several))
    return job


def path_fields(node: object, prefix: str = "") -> Iterator[tuple[object, str, str, bool]]:
    """(section, field name, dotted key, whether a list) of every path field set in ``node`` (declared with
    belle.config.paths.path_field), nested sections included (roles.<role>.model, a method's own block)."""
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if PATH in f.metadata and value is not None:
            yield node, f.name, prefix + f.name, f.metadata[PATH] == SEVERAL
        elif dataclasses.is_dataclass(value):
            yield from path_fields(value, f"{prefix}{f.name}.")


def run_dir(job: JobConfig, start_dir: Path | None = None) -> Path:
    """Absolute run directory: relative paths are taken from the directory the command started in."""
    path = Path(job.launcher.run_dir).expanduser()
    return path if path.is_absolute() else (start_dir or Path.cwd()) / path


def load_job(run_dir: Path) -> JobConfig:
    """The job a run directory was planned for (its config.yaml), checked again."""
    import yaml

    from belle.rundir import CONFIG

    saved = yaml.safe_load((Path(run_dir) / CONFIG).read_text())
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(JobConfig), saved))
