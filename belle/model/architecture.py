"""Hugging Face configs from the typed model config, and the check that a local model folder matches it."""

import hashlib
import json
import struct
from pathlib import Path

from belle.config import ModelConfig
from belle.model.source import model_source

# Architecture numbers compared between the model group and a model folder's config.json.
_KEYS = {
    "llama": {"vocab_size": "vocab_size", "hidden_size": "hidden_size", "num_layers": "num_hidden_layers"},
    "qwen2": {"vocab_size": "vocab_size", "hidden_size": "hidden_size", "num_layers": "num_hidden_layers"},
    "bloom": {"vocab_size": "vocab_size", "hidden_size": "hidden_size", "num_layers": "n_layer"},
}


WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin")
"""Weight files transformers loads from a folder (single files or shards with their index)."""
WEIGHT_INDEXES = ("*.safetensors.index.json", "pytorch_model.bin.index.json")
"""The index files of sharded weights: their weight_map names each tensor's shard."""
SAFETENSORS_MAX_HEADER = 100_000_000
"""The largest header the safetensors library reads (its own limit, in bytes)."""


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


def model_of_folder(path: str, like: ModelConfig, key: str) -> ModelConfig:
    """The typed config of the Hugging Face model folder ``path`` (set by ``key``), read from its config.json
    (``like`` gives what a folder does not say: the attention implementation)."""
    from belle.config.model import ARCHS

    config_file = Path(path).expanduser() / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{key}={path} has no config.json: point {key} at a Hugging Face model folder")
    found = json.loads(config_file.read_text())
    arch = found.get("model_type")
    if arch not in ARCHS:
        raise ValueError(f"{key}={path} holds a {arch} model; this build runs {', '.join(ARCHS)}: point {key} at "
                         "one of those")
    names = {ours: theirs for ours, theirs in _KEYS[arch].items()}
    numbers = {ours: found[theirs] for ours, theirs in names.items()}
    if arch == "bloom":
        numbers |= {"num_heads": found["n_head"], "intermediate_size": 4 * found["hidden_size"]}
    else:
        numbers |= {"num_heads": found["num_attention_heads"], "intermediate_size": found["intermediate_size"],
                    "num_kv_heads": found.get("num_key_value_heads"), "rope_theta": found.get("rope_theta", 10000.0),
                    "max_position_embeddings": found.get("max_position_embeddings", 2048)}
    return ModelConfig(name=Path(path).name, arch=arch, path=str(path), tie_word_embeddings=bool(
        found.get("tie_word_embeddings", False)), attn_implementation=like.attn_implementation, **numbers)


def check_model_path(
    model: ModelConfig, key: str = "model.path", policy: ModelConfig | None = None, adapters: bool = False
) -> None:
    """Fail early when ``model.path`` (set by ``key``) is not a model folder, or describes another architecture than
    ``model``; where ``model`` is a reward model scoring ``policy``'s tokens, when it is not one (a
    …ForSequenceClassification export with the policy's vocabulary size). A LoRA adapter (or a run dir holding one,
    belle.model.source) is checked as its base where ``adapters`` allows one, else refused."""
    if model.path is None:
        return
    source = model_source(model.path)
    if source.adapter and not adapters:
        raise ValueError(
            f"{key}={model.path} is a LoRA adapter ({source.adapter}, on {source.folder}): training starts from a "
            f"full model: point {key} at its merged export (method.lora.export_merged=true writes export/merged) "
            "or at its base with method=lora"
        )
    folder = Path(source.folder)
    config_file = folder / "config.json"
    if not config_file.is_file():
        what = "has no config.json" if folder.is_dir() else "is not a folder" if folder.exists() else "does not exist"
        fix = (f"point {key} at a reward model's export folder (the export/ of a method=rm run)" if policy else
               f"point {key} at a Hugging Face model folder (config.json + weights) or set {key}=null to build from "
               "the architecture numbers")
        raise ValueError(f"{key}={model.path} {what}: {fix}")
    try:
        found = json.loads(config_file.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{config_file} is not valid JSON ({exc.msg}): repair or replace the model folder") from None
    kind = found.get("model_type")
    if kind is not None and kind != model.arch:
        raise ValueError(
            f"{key}={model.path} holds a {kind} model but model={model.name} is model.arch={model.arch}: "
            f"choose a model group of that architecture (python -m launcher --help lists them) or another folder"
        )
    if policy is not None:
        _check_reward_model(model, key, found, policy)
    for ours, theirs in _KEYS[model.arch].items():
        if theirs in found and found[theirs] != getattr(model, ours):
            raise ValueError(
                f"{key}={model.path} has {theirs}={found[theirs]} but model={model.name} says "
                f"{ours}={getattr(model, ours)}: choose the model group that matches the folder "
                f"(or override model.{ours}={found[theirs]})"
            )
    if not any(next(config_file.parent.glob(pattern), None) for pattern in WEIGHT_FILES):
        raise ValueError(
            f"{key}={model.path} has a config.json but no weights ({', '.join(WEIGHT_FILES)}): copy the "
            "model's weight files into it"
        )
    _check_weights(config_file.parent, key)


def _check_weights(folder: Path, key: str) -> None:
    """Every shard an index names is there, and every safetensors file is as long as its header says (a truncated
    copy), read from the headers alone."""
    fix = f"copy the model's weight files into {key}={folder} again"
    for index in sorted({p for pattern in WEIGHT_INDEXES for p in folder.glob(pattern)}):
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (json.JSONDecodeError, KeyError, AttributeError, TypeError):
            raise ValueError(f"{index} is not a weight index (JSON with a weight_map): {fix}") from None
        missing = sorted(name for name in shards if not (folder / name).is_file())
        if missing:
            raise ValueError(f"{index.name} names {len(missing)} missing shard(s) ({', '.join(missing[:3])}): {fix}")
    for path in sorted(folder.glob("*.safetensors")):
        size, expected = path.stat().st_size, safetensors_size(path)
        if size != expected:
            what = "a safetensors file" if expected is None else f"{expected} bytes as its header says"
            raise ValueError(f"{path} is {size} bytes, not {what} (truncated or still copying): {fix}")


def safetensors_size(path: Path) -> int | None:
    """The size a safetensors file must have (8 + header length + the end of its last tensor), or None when it has
    no readable header."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return None
        (length,) = struct.unpack("<Q", head)
        if length > SAFETENSORS_MAX_HEADER:
            return None
        header = f.read(length)
    if len(header) < length:
        return None
    try:
        ends = [entry["data_offsets"][1] for name, entry in json.loads(header).items() if name != "__metadata__"]
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, IndexError, TypeError):
        return None
    if not all(isinstance(end, int) for end in ends):
        return None
    return 8 + length + max(ends, default=0)


def _check_reward_model(model: ModelConfig, key: str, found: dict, policy: ModelConfig) -> None:
    """A reward model's folder holds a score head and the policy's vocabulary."""
    architectures = found.get("architectures") or []
    if not any(name.endswith("ForSequenceClassification") for name in architectures):
        raise ValueError(
            f"{key}={model.path} holds a {', '.join(architectures) or 'model without a score head'}, not a reward "
            f"model (…ForSequenceClassification): point {key} at a reward model's export folder (the export/ of a "
            "method=rm run)"
        )
    vocab = found.get("vocab_size")
    if vocab is not None and vocab != policy.vocab_size:
        raise ValueError(
            f"{key}={model.path} has vocab_size={vocab} but the policy's is {policy.vocab_size}: a reward model must "
            f"score the policy's tokens: point {key} at a reward model trained with the policy's tokenizer "
            "(method=rm from the policy or its base)"
        )


def check_same_tokenizer(folder: str, key: str, policy_folder: str) -> None:
    """Refuse a reward model folder whose tokenizer files hold another vocabulary than the policy's
    tokenizer folder (nothing to compare where either has none of the same kind)."""
    theirs, ours = _vocabulary_fingerprint(folder), _vocabulary_fingerprint(policy_folder)
    if theirs and ours and theirs[0] == ours[0] and theirs != ours:
        raise ValueError(
            f"{key}={folder} has another tokenizer than the policy's ({policy_folder}): its {theirs[0]} holds another "
            f"vocabulary: point {key} at a reward model trained with the policy's tokenizer (method=rm from the "
            "policy or its base)"
        )


def _vocabulary_fingerprint(folder: str) -> tuple[str, str] | None:
    """(tokenizer file, SHA-256 of the vocabulary it holds) of a tokenizer folder, or None without one: the
    vocabulary and merges of tokenizer.json or vocab.json (not their formatting, merge notation or added tokens), or
    the bytes of a SentencePiece tokenizer.model."""
    for name in ("tokenizer.json", "vocab.json", "tokenizer.model"):
        path = Path(folder).expanduser() / name
        if not path.is_file():
            continue
        if name == "tokenizer.model":
            return name, hashlib.sha256(path.read_bytes()).hexdigest()
        data = json.loads(path.read_text(encoding="utf-8"))
        if "model" in data:
            merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"].get("merges") or []]
            data = {"vocab": data["model"].get("vocab"), "merges": merges}
        return name, hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    return None


def folder_fingerprint(path: str) -> dict:
    """What tells that a model folder changed: its config.json's SHA-256 and each weight file's size and mtime."""
    folder = Path(path).expanduser()
    weights = sorted({p for pattern in WEIGHT_FILES for p in folder.glob(pattern)})
    return {
        "config_sha256": hashlib.sha256((folder / "config.json").read_bytes()).hexdigest(),
        "weights": {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in weights},
    }
