"""Tokenizer and model: from a local folder (model.path), or built from the architecture numbers (tiny models)."""

import threading

from belle.config import ModelConfig

_BUILDING = threading.Lock()
"""transformers builds a model of a given dtype by switching torch's process-wide default dtype and back: two
threads building at once would restore each other's switch and leave it changed, so builds take turns."""


def load_tokenizer(model: ModelConfig):
    """The tokenizer of ``model``: tokenizer_path, else path's (an adapter's own, else its base's: belle.model.source),
    else the tiny tokenizer trained on the bundled data."""
    folder = model.tokenizer_path or _tokenizer_folder(model.path)
    if folder is None:
        from belle.model.tokenizer import tiny_tokenizer

        tokenizer = tiny_tokenizer()
    else:
        from transformers import AutoTokenizer

        _check_tokenizer_folder(model, folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.eos_token_id is None:
        raise ValueError(f"the tokenizer in {folder} has no EOS token: BELLE's template ends every answer with EOS")
    if len(tokenizer) > model.vocab_size:
        raise ValueError(
            f"the tokenizer has {len(tokenizer)} tokens but model.vocab_size={model.vocab_size}: "
            "use the model's own tokenizer (model.tokenizer_path) or a model with the extended vocabulary"
        )
    return tokenizer


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
"""Files of which a tokenizer folder holds at least one."""


def _tokenizer_folder(path: str | None) -> str | None:
    """The folder holding model.path's tokenizer: the adapter's, else the model's it resolves to (else path itself,
    for the check to name)."""
    from pathlib import Path

    from belle.model.source import model_source

    if path is None:
        return None
    source = model_source(path)
    holding = [f for f in (source.adapter, source.folder)
               if f and any((Path(f) / name).is_file() for name in TOKENIZER_FILES)]
    return holding[0] if holding else path


def _check_tokenizer_folder(model: ModelConfig, folder: str) -> None:
    """A one-line error before transformers gets a folder that is missing or holds no tokenizer."""
    from pathlib import Path

    key = "model.tokenizer_path" if model.tokenizer_path else "model.path"
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise ValueError(f"{key}={folder} is not a folder: point {key} at the model's tokenizer folder")
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(
            f"{key}={folder} holds no tokenizer ({', '.join(TOKENIZER_FILES)}): set model.tokenizer_path=<the "
            "model's tokenizer folder>"
        )


def build_model(model: ModelConfig, attn_implementation: str, dtype=None, seed: int = 0, task: str = "causal_lm"):
    """Load ``model.path`` with its weights (a LoRA adapter on its base: belle.model.source), or build a randomly
    initialised model from the config numbers, in ``dtype`` (None: the checkpoint's own dtype, or float32 for a random
    model), for ``task`` (belle.model.heads: causal_lm, or score — a fresh one-output head on the backbone)."""
    import torch

    from belle.data.template import pad_id
    from belle.model.architecture import check_model_path, hf_config
    from belle.model.attention import VARLEN, register_torch_varlen
    from belle.model.heads import CAUSAL_LM, auto_class, score_head_kwargs

    if attn_implementation == VARLEN:
        register_torch_varlen()
    head = {} if task == CAUSAL_LM else score_head_kwargs(pad_id(load_tokenizer(model)))
    if model.path is not None:
        from belle.model.source import model_source

        check_model_path(model, adapters=True)
        source = model_source(model.path)
        with _BUILDING:
            net = auto_class(task).from_pretrained(
                source.folder, attn_implementation=attn_implementation, dtype=dtype or "auto", **head
            )
        if source.adapter:  # answered with the adapter as trained, not merged (the recipes that train refuse it)
            from peft import PeftModel

            net = PeftModel.from_pretrained(net, source.adapter)
        return net
    config = hf_config(model)
    config._attn_implementation = attn_implementation
    for key, value in head.items():
        setattr(config, key, value)
    with _BUILDING:
        torch.manual_seed(seed)
        return auto_class(task).from_config(
            config, attn_implementation=attn_implementation, dtype=dtype or torch.float32
        )
