"""A run's checkpoint turned back into the Hugging Face folders the end of its training writes: the engine's
states read from their ZeRO shards (ZeRO-2 or 3), loaded into the model the run trained (LoRA adapters applied;
a PPO checkpoint's actor), written by belle.model.export in the training precision. A checkpoint whose weights
hold a score head is a reward model's, exported with its adapters merged as the reward model recipe exports."""

from __future__ import annotations

import re
from pathlib import Path

from belle.config import JobConfig

SCORE_HEAD = re.compile(r"(^|\.)score\.")
"""A state-dict key of a score head (…ForSequenceClassification's ``score``, inside PEFT's wrappers too)."""


def export_checkpoint(job: JobConfig, folder: Path, out_dir: Path) -> list[Path]:
    """Export checkpoint ``folder`` of a run of ``job`` to ``out_dir`` → the folders written. Raises ValueError when
    the checkpoint does not hold the job's model."""
    import torch
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    from belle.model.export import export_module
    from belle.model.heads import CAUSAL_LM, SCORE
    from belle.model.load import build_model, load_tokenizer
    from belle.model.lora import apply_lora
    from belle.strategy.engine import DTYPES
    from belle.train.state import CHECKPOINT_TAG

    model = job.model
    if (folder / "actor").is_dir():  # a PPO checkpoint: the actor is what its run exports
        from belle.config.ppo import role_model

        folder, model = folder / "actor", role_model(job, "actor")
    state = get_fp32_state_dict_from_zero_checkpoint(str(folder), tag=CHECKPOINT_TAG)
    task = SCORE if any(SCORE_HEAD.search(key) for key in state) else CAUSAL_LM
    net = build_model(model, "sdpa", dtype=getattr(torch, DTYPES[job.strategy.precision]), seed=job.train.seed,
                      task=task)  # in the training precision, as the end of training exports
    if job.method.lora is not None:
        net = apply_lora(net, job.method.lora, task)
    missing, unexpected = net.load_state_dict(state, strict=False)
    trained = {name for name, p in net.named_parameters() if p.requires_grad}
    if unexpected or trained & set(missing):
        raise ValueError(f"{folder} does not hold this run's model: {len(unexpected)} unexpected and "
                         f"{len(trained & set(missing))} missing trained weights (e.g. {(unexpected or missing)[0]})")
    return export_module(net, model, job.method.lora, load_tokenizer(model), net.state_dict(), Path(out_dir),
                         merge=task == SCORE)
