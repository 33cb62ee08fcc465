"""Secrets never reach a written file: config keys that look like credentials are redacted."""

import re
from typing import Any

# "token" only as the whole name or its last word (hf_token), not tokenizer_path or mean_tokens.
SECRET = re.compile(r"(api_?key|secret|password|(^|_)token$)", re.IGNORECASE)
REDACTED = "<redacted>"


def scrub(value: Any) -> Any:
    """A copy of ``value`` with every mapping entry whose key looks like a secret redacted."""
    if isinstance(value, dict):
        return {k: REDACTED if SECRET.search(str(k)) else scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value
