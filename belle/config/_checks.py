"""Small helpers shared by the config dataclasses (every failed check is one ValueError naming the fix), and what
a credential's name looks like."""

import math
import re
from collections.abc import Iterable

# "token" only as the whole name or its last word (hf_token), not tokenizer_path or mean_tokens.
SECRET = re.compile(r"(api_?key|secret|password|(^|_)token$)", re.IGNORECASE)
"""A config key or variable name that looks like a credential: refused where it would be written (belle.config),
redacted in what is written (belle.monitor.secrets)."""
NAMES_A_PLACE = re.compile(r"_(file|path|stdin|env|dir)$", re.IGNORECASE)
"""A credential-like name that says where the credential is (--password-file, api_key_env), not the credential."""


def require(ok: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``ok``; messages name the override that fixes the problem."""
    if not ok:
        raise ValueError(message)


def one_of(key: str, value: object, allowed: Iterable[object]) -> None:
    """Check that ``value`` is one of ``allowed`` for the config key ``key``."""
    allowed = list(allowed)
    require(value in allowed, f"{key}={value!r} is not one of {', '.join(map(str, allowed))}: set {key}=<one of them>")


def positive(key: str, value: float, example: object) -> None:
    """Check that a number is finite and > 0 (inf and nan pass a plain comparison or fail it silently)."""
    require(math.isfinite(value), f"{key}={value} must be a finite number: set {key}={example}")
    require(value > 0, f"{key}={value} must be > 0: set {key}={example}")
