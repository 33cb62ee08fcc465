"""The end-of-training export: a Hugging Face model folder (full fine-tune, or LoRA merged where asked) or a PEFT
adapter, with the base and the merged model where asked, gathered from the ZeRO shards on every rank and written by
rank 0. Causal LMs and score models (belle.model.heads) alike.

Rank 0 writes into a temporary sibling of out_dir, checks what it wrote (no empty tensor, no missing weight, a
trained adapter) and only then renames it into place, so a crash or a failed check never leaves half an export.
"""

from __future__ import annotations

import json
from pathlib import Path

from belle.config import LoraConfig, ModelConfig
from belle.rundir import staged_dir


def export(
    engine, model: ModelConfig, lora: LoraConfig | None, tokenizer, out_dir: Path, merge: bool = False,
    files: dict[str, str] | None = None,
) -> list[Path]:
    """Export the trained ``engine`` to ``out_dir``; call it on every rank (the ZeRO-3 gather is collective).

    Full fine-tune, or LoRA with ``merge`` (a reward model): out_dir is a model folder, adapters merged in. Other
    LoRA: out_dir/adapter, plus out_dir/base when the base was randomly initialised (model.path=null) and
    out_dir/merged when method.lora.export_merged. ``files`` (name → text) are written into out_dir too. Returns
    the written folders on rank 0, [] elsewhere; a failure on rank 0 is raised on every rank as a RuntimeError.
    """
    import torch.distributed as dist

    out_dir = Path(out_dir).absolute()
    state = _gather(engine, frozen=lora is None or merge or model.path is None)
    failure, written = None, []
    if dist.get_rank() == 0:
        try:
            written = _write(engine.module, model.path, None if merge else lora, tokenizer, state, out_dir, files)
        except Exception as error:  # the other ranks must hear of it, or they would wait forever
            failure = error
    message = [None if failure is None else f"{type(failure).__name__}: {failure}"]
    dist.broadcast_object_list(message, src=0)  # also the barrier: no rank returns before rank 0 is done
    if message[0] is not None:
        raise RuntimeError(f"export to {out_dir} failed: {message[0]}") from failure
    return written


def export_module(module, model: ModelConfig, lora: LoraConfig | None, tokenizer, state: dict, out_dir: Path,
                  merge: bool = False) -> list[Path]:
    """``export`` of a module that is not in a DeepSpeed engine (one process: ``state`` its full state dict, e.g.
    read back from a checkpoint's ZeRO shards): the same folders, written and checked the same way."""
    return _write(module, model.path, None if merge else lora, tokenizer, state, Path(out_dir).absolute(), None)


def merge_adapter(base: str, adapter: str, tokenizer, out_dir: Path) -> Path:
    """``base`` with the PEFT ``adapter`` merged in, written whole (staged, checked, then moved) to ``out_dir``."""
    out_dir = Path(out_dir).absolute()
    with staged_dir(out_dir) as staging:
        _merge(base, Path(adapter), staging)
        tokenizer.save_pretrained(staging)
        _check_model(staging)
    return out_dir


def _gather(engine, frozen: bool) -> dict | None:
    """The full state dict of engine.module on rank 0 (None elsewhere); without frozen parameters unless ``frozen``."""
    import torch.distributed as dist

    if engine.zero_optimization_partition_weights():
        return engine._zero3_consolidated_16bit_state_dict(exclude_frozen_parameters=not frozen)
    if dist.get_rank() != 0:
        return None
    return {key: value.detach().cpu() for key, value in engine.module.state_dict().items()}


def _write(
    model, base: str | None, lora: LoraConfig | None, tokenizer, state: dict, out_dir: Path, files: dict | None
) -> list[Path]:
    """Rank 0: write and check the export in a temporary sibling of out_dir, then move it into place. A PeftModel
    with ``lora`` None is merged first."""
    from peft import PeftModel

    with staged_dir(out_dir) as staging:
        for name, text in (files or {}).items():
            (staging / name).write_text(text)
        if lora is None:
            if isinstance(model, PeftModel):
                model = _merged(model, state)
                state = model.state_dict()
            _save_model(model, state, tokenizer, staging)
            _check_model(staging)
            folders = [staging]
        else:
            folders = _save_lora(model, base, lora, tokenizer, state, staging, out_dir)
    return [out_dir / folder.relative_to(staging) for folder in folders]


def _save_lora(
    peft_model, base: str | None, lora: LoraConfig, tokenizer, state: dict, staging: Path, out_dir: Path
) -> list[Path]:
    """staging/adapter, and staging/base (random-init base) and staging/merged (export_merged), each checked."""
    adapter = staging / "adapter"
    peft_model.save_pretrained(adapter, state_dict=state, safe_serialization=True)
    tokenizer.save_pretrained(adapter)
    _check_adapter(peft_model, adapter)
    folders = [adapter]
    if base is None:
        base = staging / "base"
        _save_model(peft_model.get_base_model(), _base_state(state), tokenizer, base)
        _check_model(base)
        _set_base_path(adapter, out_dir / "base")
        folders.append(base)
    if lora.export_merged:
        merged = staging / "merged"
        _merge(base, adapter, merged)
        tokenizer.save_pretrained(merged)
        _check_model(merged)
        folders.append(merged)
    return folders


def _merged(peft_model, state: dict):
    """A CPU copy of ``peft_model`` holding the gathered ``state``, its adapters merged into the base weights."""
    import copy

    import torch
    from peft import get_peft_model

    base = peft_model.get_base_model()
    with torch.device("meta"):
        fresh = type(base)(base.config)
    copied = get_peft_model(fresh, copy.deepcopy(peft_model.peft_config["default"]), autocast_adapter_dtype=False)
    copied.load_state_dict(state, strict=True, assign=True)
    return copied.merge_and_unload()


def _save_model(model, state: dict, tokenizer, folder: Path) -> None:
    """A Hugging Face folder: config, safetensors weights from ``state`` (tied copies dropped), tokenizer."""
    model.save_pretrained(folder, state_dict=state)
    tokenizer.save_pretrained(folder)


def _base_state(state: dict) -> dict:
    """The base model's weights inside a PeftModel state dict, under the base model's own names."""
    base = {}
    for key, value in state.items():
        if ".lora_" in key or ".modules_to_save." in key:
            continue
        name = key.removeprefix("base_model.model.").replace(".base_layer.", ".").replace(".original_module.", ".")
        base[name] = value
    return base


def _set_base_path(adapter: Path, base: Path) -> None:
    """Point the adapter's config at the exported base (the adapter is useless without it)."""
    config_file = adapter / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = str(base)
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _merge(base: Path | str, adapter: Path, folder: Path) -> None:
    """The base with the adapter merged in, computed on a CPU copy, saved as a model folder."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype="auto", device_map="cpu")
    PeftModel.from_pretrained(model, adapter).merge_and_unload().save_pretrained(folder)


def _shapes(folder: Path) -> dict[str, list[int]]:
    """Every tensor's shape in the folder's safetensors files, read from the headers only."""
    from safetensors import safe_open

    shapes = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(file, framework="pt") as weights:
            shapes |= {key: weights.get_slice(key).get_shape() for key in weights.keys()}  # noqa: SIM118 (not iterable)
    if not shapes:
        raise RuntimeError(f"{folder.name} has no safetensors weights")
    empty = [key for key, shape in shapes.items() if 0 in shape]
    if empty:
        raise RuntimeError(f"{folder.name} has {len(empty)} empty tensors (un-gathered ZeRO-3 shards?): {empty[:5]}")
    return shapes


def _check_model(folder: Path) -> None:
    """Every parameter of the folder's architecture is saved (one name per group of tied parameters) with its shape."""
    import torch
    from transformers import AutoConfig

    from belle.model.heads import auto_class, folder_task

    shapes = _shapes(folder)
    with torch.device("meta"):
        model = auto_class(folder_task(folder)).from_config(AutoConfig.from_pretrained(folder))
    tied: dict[int, list[str]] = {}
    params = dict(model.named_parameters(remove_duplicate=False))
    for name, param in params.items():
        tied.setdefault(id(param), []).append(name)
    missing = [names[0] for names in tied.values() if not any(name in shapes for name in names)]
    if missing:
        raise RuntimeError(f"{folder.name} misses {len(missing)} of {len(tied)} weights: {missing[:5]}")
    wrong = [name for name in params if name in shapes and list(params[name].shape) != list(shapes[name])]
    if wrong:
        raise RuntimeError(f"{folder.name} has weights of the wrong shape: {wrong[:5]}")


def _check_adapter(peft_model, folder: Path) -> None:
    """Two LoRA tensors per adapted module, every modules_to_save module present, and at least one trained lora_B."""
    from peft.tuners.lora import LoraLayer
    from safetensors import safe_open

    shapes = _shapes(folder)
    lora_keys = [key for key in shapes if ".lora_A." in key or ".lora_B." in key]
    expected = 2 * sum(isinstance(module, LoraLayer) for module in peft_model.modules())
    if len(lora_keys) != expected:
        raise RuntimeError(f"the adapter holds {len(lora_keys)} LoRA tensors, expected {expected} (2 per module)")
    saved = peft_model.peft_config["default"].modules_to_save or []
    absent = [name for name in saved if not any(f".{name}." in key for key in shapes if key not in lora_keys)]
    if absent:
        raise RuntimeError(f"the adapter misses the modules_to_save {absent}")
    with safe_open(folder / "adapter_model.safetensors", framework="pt") as weights:
        trained = any(weights.get_tensor(key).any() for key in lora_keys if ".lora_B." in key)
    if not trained:
        raise RuntimeError(
            "every lora_B in the adapter is zero, so it changes nothing (untrained, or the ZeRO-3 gather missed it): "
            "train at least one optimizer step with a non-zero optim.lr"
        )
