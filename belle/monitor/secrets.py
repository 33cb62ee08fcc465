"""Secrets never reach a written file: config keys that look like credentials are redacted (shell lines that would
write one are refused in the config: belle.config.shell)."""

from typing import Any

from belle.config._checks import SECRET

REDACTED = "<redacted>"


def scrub(value: Any) -> Any:
    """A copy of ``value`` with every mapping entry whose key looks like a secret redacted."""
    if isinstance(value, dict):
        return {k: REDACTED if SECRET.search(str(k)) else scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value
