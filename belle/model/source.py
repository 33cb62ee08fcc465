"""What a model.path names: a Hugging Face model folder, a PEFT (LoRA) adapter folder on its base, or a run
directory / its export, followed to the model or adapter inside; and a fingerprint of the weights it holds."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

ADAPTER_CONFIG = "adapter_config.json"
FINGERPRINT_BYTES = 1 << 20
"""Bytes hashed from each end of every weight file (with its size): quick on a 7B model, and a changed tensor
anywhere changes a safetensors header's offsets or the bytes at the ends in practice."""


@dataclass(frozen=True)
class ModelSource:
    """The folders a model.path resolves to."""

    folder: str | None
    """The full model's folder (an adapter's base); None: the model is built from the config's numbers."""
    adapter: str | None = None
    """The PEFT adapter folder applied on ``folder`` (not merged), or None."""

    @property
    def kind(self) -> str:
        return "adapter" if self.adapter else "full" if self.folder else "random"


def model_source(path: str | None) -> ModelSource:
    """Resolve ``path``: a folder with config.json is a model; one with adapter_config.json an adapter on the base
    its config names (relative names are taken from the adapter's folder); a run dir is followed to its export/,
    an export of LoRA adapters to its adapter/. Anything else is returned as is, for check_model_path to refuse."""
    if path is None:
        return ModelSource(None)
    folder = Path(path).expanduser()
    for inner in ("export", "adapter"):
        holds_model = (folder / "config.json").is_file() or (folder / ADAPTER_CONFIG).is_file()
        if not holds_model and (folder / inner).is_dir():
            folder = folder / inner
    if (folder / ADAPTER_CONFIG).is_file() and not (folder / "config.json").is_file():
        try:
            base = json.loads((folder / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
        except json.JSONDecodeError as exc:
            raise ValueError(f"{folder / ADAPTER_CONFIG} is not valid JSON ({exc.msg}): repair or re-export the "
                             "adapter") from None
        if not base:
            raise ValueError(f"the adapter {folder} names no base model (base_model_name_or_path in {ADAPTER_CONFIG})"
                             ": set it to the base model's folder")
        base_path = Path(base).expanduser()
        return ModelSource(str(base_path if base_path.is_absolute() else (folder / base_path).resolve()), str(folder))
    return ModelSource(str(folder))


def weights_fingerprint(source: ModelSource) -> str | None:
    """A short SHA-256 of the model's and the adapter's config and weights (each file's size and its first and
    last FINGERPRINT_BYTES); None for a model built from the numbers (its weights follow from train.seed)."""
    if source.folder is None:
        return None
    digest = hashlib.sha256()
    for folder in filter(None, (source.folder, source.adapter)):
        files = sorted(p for p in Path(folder).iterdir() if p.suffix in (".json", ".safetensors", ".bin")
                       and not p.name.startswith("tokenizer"))
        for path in files:
            size = path.stat().st_size
            digest.update(f"{path.name}:{size}:".encode())
            with open(path, "rb") as f:
                digest.update(f.read(FINGERPRINT_BYTES))
                if size > 2 * FINGERPRINT_BYTES:
                    f.seek(-FINGERPRINT_BYTES, 2)
                    digest.update(f.read())
    return digest.hexdigest()[:16]
