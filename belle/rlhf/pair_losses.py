"""The losses of preference pairs on plain tensors: the reward model's pairwise loss and DPO's, and the sequence
log-probability both DPO sides are scored with. Every tensor is per pair (``[pairs]``) unless it says otherwise."""

import torch
import torch.nn.functional as F
from torch import Tensor


def pairwise_loss(chosen: Tensor, rejected: Tensor, margin: float = 0.0, center_coef: float = 0.0) -> Tensor:
    """The reward model's loss per pair: ``-logsigmoid(r_c - r_r - margin)``, plus ``center_coef * (r_c + r_r)^2``
    which keeps the scores centred on 0 (TRL's ``center_rewards_coefficient``)."""
    loss = -F.logsigmoid(chosen - rejected - margin)
    return loss + center_coef * (chosen + rejected) ** 2 if center_coef else loss


def dpo_loss(
    policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor, beta: float,
    kind: str = "sigmoid", label_smoothing: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """(loss, chosen reward, rejected reward) per pair from sequence log-probs of the policy and the reference.

    The implicit rewards are ``beta * (log pi - log pi_ref)``; with h = the chosen log-ratio minus the rejected one,
    sigmoid (DPO): ``-(1 - eps) logsigmoid(beta h) - eps logsigmoid(-beta h)`` (eps = label smoothing, conservative
    DPO); ipo: ``(h - 1 / (2 beta))^2``. The rewards are detached (metrics).
    """
    chosen_ratio, rejected_ratio = policy_chosen - ref_chosen, policy_rejected - ref_rejected
    h = chosen_ratio - rejected_ratio
    if kind == "sigmoid":
        loss = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    elif kind == "ipo":
        loss = (h - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss {kind!r}: set method.dpo.loss=sigmoid or ipo")
    return loss, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


def sequence_log_probs(logits: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """Per sequence, the sum of log p(token) over the positions where ``mask`` is true: ``logits[:, t]`` predicts
    ``labels[:, t + 1]`` (the causal shift is done here), in float32 or wider. ``[sequences, length]`` →
    ``[sequences]``."""
    logits = logits[:, :-1].float() if logits.dtype in (torch.float16, torch.bfloat16) else logits[:, :-1]
    targets, keep = labels[:, 1:], mask[:, 1:].bool()
    picked = logits.gather(-1, torch.where(keep, targets, 0).unsqueeze(-1)).squeeze(-1)
    token_log_probs = picked - logits.logsumexp(-1)
    return torch.where(keep, token_log_probs, 0).sum(-1)
