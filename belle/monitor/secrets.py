"""Secrets never reach a written file: config keys that look like credentials are redacted (shell lines that would
write one are refused in the config: belle.config.shell)."""

from typing import Any

from belle.config._checks import NAMES_A_PLACE, SECRET

REDACTED = "<redacted>"


def scrub(value: Any) -> Any:
    """A copy of ``value`` with every mapping entry whose key looks like a secret redacted (not one that names
    where a secret is: api_key_env, password_file)."""
    if isinstance(value, dict):
        return {k: REDACTED if SECRET.search(str(k)) and not NAMES_A_PLACE.search(str(k)) else scrub(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value
