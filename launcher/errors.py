"""One-line explanations of what went wrong while composing or checking a job, each naming the fix."""

import dataclasses
import difflib
import re

from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf.errors import OmegaConfBaseException

from launcher.compose import unknown_key_message


def _full_key(exc: BaseException) -> str | None:
    for e in (exc, exc.__cause__):
        key = getattr(e, "full_key", None)
        if key:
            return key
    return None


_TYPE_NAMES = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false"}


def _fix(key: str | None, message: str) -> str:
    """The fix for an OmegaConf error about ``key`` (a wrong type or an interpolation that cannot resolve)."""
    converted = re.search(r"could not be converted to (\w+)", message)
    if converted and key:
        return f"set {key}=<{_TYPE_NAMES.get(converted.group(1), converted.group(1))}>"
    env = re.search(r"Environment variable '([^']+)' not found", message)
    if env:
        return f"export {env.group(1)} before launching, or give a default: ${{oc.env:{env.group(1)},<default>}}"
    if "nterpolation" in message:
        return ("point the ${…} at an existing key, use a known resolver (oc.env, bundled), or quote a literal $ "
                "as \\${…}")
    return "fix the value"


def explain(exc: BaseException) -> str:
    """A single line for ``exc``: what is wrong and the override or action that fixes it."""
    if isinstance(exc, MissingConfigException) and exc.options is not None:
        group, _, name = (exc.missing_cfg_file or "").rpartition("/")
        prefix = "+" if group in ("exp", "smoke") else ""
        example = (difflib.get_close_matches(name, exc.options, n=1, cutoff=0) or exc.options)[0]
        return (
            f"unknown {group or 'config'} '{name}': choose one of {', '.join(exc.options)} "
            f"(e.g. {prefix}{group}={example})"
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
        return f"{where}{first}: {_fix(key, first)}"
    if isinstance(exc, OverrideParseException):
        return (f"cannot parse an override ({str(exc).splitlines()[0]}): write key=value, and quote a value holding "
                "[ ] ( ) { } , $ or spaces: \"key='value'\"")
    return " ".join(str(exc).split("\n")[0:1]) or type(exc).__name__
