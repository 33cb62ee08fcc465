"""Hugging Face configs from the typed model config, and the check that a local model folder matches it."""

import json
from pathlib import Path

from belle.config import ModelConfig

# Architecture numbers compared between the model group and a model folder's config.json.
_KEYS = {
    "llama": {"vocab_size": "vocab_size", "hidden_size": "hidden_size", "num_layers": "num_hidden_layers"},
    "qwen2": {"vocab_size": "vocab_size", "hidden_size": "hidden_size", "num_layers": "num_hidden_layers"},
    "bloom": {"vocab_size": "vocab_size", "hidden_size": "hidden_size", "num_layers": "n_layer"},
}


WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin")
"""Weight files transformers loads from a folder (single files or shards with their index)."""


def hf_config(model: ModelConfig, pad_token_id: int = 3, eos_token_id: int = 2, bos_token_id: int = 1):
    """The transformers config that builds ``model`` from its numbers (random init, or on the meta device)."""
    from transformers import BloomConfig, LlamaConfig, Qwen2Config

    ids = {"pad_token_id": pad_token_id, "eos_token_id": eos_token_id, "bos_token_id": bos_token_id}
    if model.arch == "bloom":
        if model.intermediate_size != 4 * model.hidden_size:
            raise ValueError(
                f"model.intermediate_size={model.intermediate_size}: BLOOM's MLP is 4 x hidden_size: "
                f"set model.intermediate_size={4 * model.hidden_size}"
            )
        return BloomConfig(
            vocab_size=model.vocab_size, hidden_size=model.hidden_size, n_layer=model.num_layers,
            n_head=model.num_heads, tie_word_embeddings=model.tie_word_embeddings, **ids,
        )
    cls = LlamaConfig if model.arch == "llama" else Qwen2Config
    return cls(
        vocab_size=model.vocab_size, hidden_size=model.hidden_size, intermediate_size=model.intermediate_size,
        num_hidden_layers=model.num_layers, num_attention_heads=model.num_heads,
        num_key_value_heads=model.kv_heads, max_position_embeddings=model.max_position_embeddings,
        rope_theta=model.rope_theta, tie_word_embeddings=model.tie_word_embeddings, **ids,
    )


def check_model_path(model: ModelConfig) -> None:
    """Fail early when ``model.path`` is not a model folder or describes another architecture than ``model``."""
    if model.path is None:
        return
    folder = Path(model.path).expanduser()
    config_file = folder / "config.json"
    if not config_file.is_file():
        what = "has no config.json" if folder.is_dir() else "is not a folder" if folder.exists() else "does not exist"
        raise ValueError(
            f"model.path={model.path} {what}: point model.path at a Hugging Face model folder "
            "(config.json + weights) or set model.path=null to build from the architecture numbers"
        )
    try:
        found = json.loads(config_file.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{config_file} is not valid JSON ({exc.msg}): repair or replace the model folder") from None
    kind = found.get("model_type")
    if kind is not None and kind != model.arch:
        raise ValueError(
            f"model.path={model.path} holds a {kind} model but model={model.name} is model.arch={model.arch}: "
            f"choose a model group of that architecture (python -m launcher --help lists them) or another folder"
        )
    for ours, theirs in _KEYS[model.arch].items():
        if theirs in found and found[theirs] != getattr(model, ours):
            raise ValueError(
                f"model.path={model.path} has {theirs}={found[theirs]} but model={model.name} says "
                f"{ours}={getattr(model, ours)}: choose the model group that matches the folder "
                f"(or override model.{ours}={found[theirs]})"
            )
    if not any(next(config_file.parent.glob(pattern), None) for pattern in WEIGHT_FILES):
        raise ValueError(
            f"model.path={model.path} has a config.json but no weights ({', '.join(WEIGHT_FILES)}): copy the "
            "model's weight files into it"
        )
