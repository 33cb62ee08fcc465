"""The per-token forward passes of PPO's roles on a micro-batch: prompts left-padded to P tokens, responses
right-padded to R, ``response_mask`` [m, R] true on response tokens. The output for response token t is read at
position t − 1; a padded row gives the same outputs as the row alone."""

from __future__ import annotations

import torch

from belle.rlhf.ppo_losses import log_probs_from_logits


def model_inputs(micro: dict, device) -> dict[str, torch.Tensor]:
    """Forward inputs of a left-padded micro-batch: positions count real tokens only, as in generation, so a padded
    row gives the same outputs as the row alone."""
    mask = micro["attention_mask"].to(device)
    return {"input_ids": micro["input_ids"].to(device), "attention_mask": mask,
            "position_ids": (mask.cumsum(-1) - 1).clamp_min(0)}


def response_log_probs(model, micro: dict, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs [m, R] of a micro-batch's response tokens by a causal LM (an engine or a plain module), and the
    detached temperature-scaled logits [m, R, vocab] they come from."""
    length = micro["response_mask"].shape[1]
    logits = model(**model_inputs(micro, _device(model)), use_cache=False).logits
    logits = logits[:, -length - 1:-1].float() / temperature
    return log_probs_from_logits(logits, micro["input_ids"][:, -length:].to(logits.device)), logits.detach()


def token_scores(model, micro: dict) -> torch.Tensor:
    """[m, P + R] float32 per-token outputs of a score model's head (its ``score`` layer, caught by a hook: the
    model's own forward, ZeRO-3 gathers included, keeps only the last token's)."""
    root = model.module if hasattr(model, "module") else model
    head = min(((name, m) for name, m in root.named_modules() if name.rpartition(".")[2] == "score"),
               key=lambda item: len(item[0]))[1]
    caught = []
    handle = head.register_forward_hook(lambda module, args, out: caught.append(out))
    try:
        model(**model_inputs(micro, _device(model)), use_cache=False)
    finally:
        handle.remove()
    return caught[0].squeeze(-1).float()


def _device(model) -> torch.device:
    return model.device if hasattr(model, "device") else next(model.parameters()).device
