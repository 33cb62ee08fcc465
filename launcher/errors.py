"""One-line explanations of what went wrong while composing or checking a job, each naming the fix."""

import dataclasses
import re

from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf.errors import OmegaConfBaseException

from launcher.compose import unknown_key_message


def _full_key(exc: BaseException) -> str | None:
    for e in (exc, exc.__cause__):
        key = getattr(e, "full_key", None)
        if key:
            return key
    return None


def explain(exc: BaseException) -> str:
    """A single line for ``exc``: what is wrong and the override or action that fixes it."""
    if isinstance(exc, MissingConfigException) and exc.options is not None:
        group, _, name = (exc.missing_cfg_file or "").rpartition("/")
        prefix = "+" if group in ("exp", "smoke") else ""
        return (
            f"unknown {group or 'config'} '{name}': choose one of {', '.join(exc.options)} "
            f"(e.g. {prefix}{group}={exc.options[0]})"
        )
    ambiguous = re.match(r"Ambiguous value for argument '([^=']+)=([^']*)'", str(exc))
    if ambiguous:  # Hydra reads an unquoted comma list as a sweep
        key, value = ambiguous.groups()
        return f"{ambiguous.group(0)}: quote a list of values so it is not read as a sweep: \"{key}='{value}'\""
    cause = exc.__cause__
    if isinstance(cause, OmegaConfBaseException) or isinstance(exc, OmegaConfBaseException):
        inner = cause if isinstance(cause, OmegaConfBaseException) else exc
        key = _full_key(inner)
        first = str(inner).splitlines()[0]
        missing = re.match(r"Key '([^']+)' not in '([^']+)'", first)
        if missing and key:
            schema = getattr(inner, "object_type", None)
            known = [f.name for f in dataclasses.fields(schema)] if dataclasses.is_dataclass(schema) else []
            return unknown_key_message(key, known)
        where = f"{key}: " if key else ""
        if isinstance(exc, ConfigCompositionException) and not key:
            return f"{str(exc).splitlines()[0]} {first}"
        return f"{where}{first}"
    return " ".join(str(exc).split("\n")[0:1]) or type(exc).__name__
