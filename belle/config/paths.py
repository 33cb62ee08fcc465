"""Config fields that hold file system paths: declared once with ``path_field``, made absolute at compose time
(launcher.compose), so every process of a run (Ray workers, a Slurm job) reads the same files wherever its
working directory is."""

import os
from dataclasses import MISSING, field
from pathlib import Path
from typing import Any

PATH = "path"
"""The field metadata key that marks a path field; its value is ONE or SEVERAL."""
ONE = "one"
SEVERAL = "several"
"""A comma-separated list of paths or globs (data.path)."""


def path_field(default: Any = MISSING, several: bool = False) -> Any:
    """A dataclass field holding a path (``several``: a comma-separated list of paths or globs)."""
    return field(default=default, metadata={PATH: SEVERAL if several else ONE})


def absolute(value: str, start: Path, several: bool = False) -> str:
    """``value`` with ``~`` expanded and a relative path taken from ``start``; each part of a list alike. Blank
    values and parts stay as they are (their own checks name them)."""
    if several:
        return ",".join(absolute(part.strip(), start) for part in value.split(","))
    if not value.strip():
        return value
    path = os.path.expanduser(value)
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(start, path))
