"""PPO math on plain tensors: masked statistics, KL estimators, GAE, the clipped losses and the KL controllers.

Per-token tensors are ``[batch, response_len]``; ``mask`` is true (or 1) on response tokens. Values at masked
positions never reach a result, even when they are inf or nan (padding log-probs may be anything).
"""

import torch
from torch import Tensor

from belle.config.ppo import KL_ERROR_CLIP

KL_ESTIMATORS = ("k1", "k2", "k3")


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``x`` over the unmasked entries (along ``dim``, or all of them); 0 where nothing is unmasked."""
    mask = mask.bool()
    total = torch.where(mask, x, 0).sum() if dim is None else torch.where(mask, x, 0).sum(dim)
    count = mask.sum() if dim is None else mask.sum(dim)
    return total / count.clamp_min(1)


def masked_var(x: Tensor, mask: Tensor) -> Tensor:
    """Unbiased variance of the unmasked entries (Bessel-corrected, as verl and TRL)."""
    count = int(mask.bool().sum())
    if count < 2:
        raise ValueError(f"a masked variance needs at least 2 unmasked values, got {count}: pass a larger batch")
    centered = x - masked_mean(x, mask)
    return masked_mean(centered * centered, mask) * count / (count - 1)


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True) -> Tensor:
    """``x`` scaled to unit variance over the unmasked entries, and centred unless ``shift_mean`` is False (then
    the mean is kept); 0 at masked positions."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + 1e-8)
    return torch.where(mask.bool(), whitened if shift_mean else whitened + mean, 0)


def kl_penalty(logp: Tensor, ref_logp: Tensor, estimator: str) -> Tensor:
    """Per-token estimate of KL(policy ‖ reference) from the sampled tokens' log-probs (Schulman's k1/k2/k3).

    k1 = logp − ref (unbiased, may be negative); k2 = ½(logp − ref)²; k3 = (r − 1) − log r with r = exp(ref − logp)
    (unbiased, never negative; log r is clamped to ±20 so exp cannot overflow)."""
    if estimator not in KL_ESTIMATORS:
        raise ValueError(f"unknown KL estimator {estimator!r}: choose one of {', '.join(KL_ESTIMATORS)}")
    log_ratio = logp - ref_logp
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio.square()
    log_r = (-log_ratio).clamp(-20, 20)
    return torch.expm1(log_r) - log_r


@torch.no_grad()
def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over response tokens → ``(advantages, returns)``, both 0 where masked.

    Masked-carry recursion (verl): a masked position passes the next value and advantage through unchanged, so
    the last response token bootstraps from 0, trailing padding contributes nothing and a masked hole is skipped."""
    mask = mask.bool()
    rewards, values = torch.where(mask, rewards, 0), torch.where(mask, values, 0)
    next_value = torch.zeros_like(values[:, 0])
    next_advantage = torch.zeros_like(values[:, 0])
    advantages = torch.zeros_like(values)
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = delta + gamma * lam * next_advantage
        next_value = torch.where(mask[:, t], values[:, t], next_value)
        next_advantage = torch.where(mask[:, t], advantage, next_advantage)
        advantages[:, t] = torch.where(mask[:, t], advantage, 0)
    return advantages, advantages + values


def policy_loss(
    logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, clip: float, *, token_count: float | Tensor
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate → ``(loss, stats)``.

    The loss is the masked token SUM over ``token_count``, the number of response tokens in the whole global batch
    (every rank and micro-batch), so summing the losses of any sharding gives the same number and gradient. Stats
    are detached means over this call's tokens: ``clip_frac`` (share of tokens where the clipped term wins),
    ``approx_kl`` = ½·mean((logp − old_logp)²) (TRL's approxkl; k2 of old vs new policy), ``ratio_mean``."""
    mask = mask.bool()
    log_ratio = torch.where(mask, logp - old_logp, 0)
    ratio = torch.exp(log_ratio)
    advantages = torch.where(mask, advantages, 0)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip, 1 + clip)
    loss = torch.where(mask, torch.maximum(unclipped, clipped), 0).sum() / token_count
    stats = {
        "clip_frac": masked_mean((clipped > unclipped).float(), mask),
        "approx_kl": 0.5 * masked_mean(log_ratio.square(), mask),
        "ratio_mean": masked_mean(ratio, mask),
    }
    return loss, {name: value.detach() for name, value in stats.items()}


def value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    value_clip: float,
    *,
    token_count: float | Tensor,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped value loss → ``(loss, stats)``: ½·max((v − R)², (v_clipped − R)²) with v_clipped kept within
    ``value_clip`` of ``old_values``; masked token sum over the global ``token_count`` as in ``policy_loss``.
    Stats: ``value_clip_frac``, the share of tokens where the clipped error wins."""
    mask = mask.bool()
    values, old_values, returns = (torch.where(mask, t, 0) for t in (values, old_values, returns))
    clipped_values = old_values + (values - old_values).clamp(-value_clip, value_clip)
    unclipped_error = (values - returns).square()
    clipped_error = (clipped_values - returns).square()
    per_token = 0.5 * torch.maximum(unclipped_error, clipped_error)
    loss = torch.where(mask, per_token, 0).sum() / token_count
    return loss, {"value_clip_frac": masked_mean((clipped_error > unclipped_error).float(), mask).detach()}


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Per-token entropy of ``softmax(logits)`` for ``[batch, len, vocab]`` logits → ``[batch, len]`` float32.

    logsumexp(z) − Σ softmax(z)·z, one row at a time in float32, so the peak extra memory is one row's logits."""
    rows = []
    for row in logits:
        row = row.float()
        rows.append(torch.logsumexp(row, -1) - (torch.softmax(row, -1) * row).sum(-1))
    return torch.stack(rows)


def log_probs_from_logits(logits: Tensor, tokens: Tensor) -> Tensor:
    """log_softmax(logits) at ``tokens``: ``[batch, len, vocab]`` logits and ``[batch, len]`` ids → ``[batch, len]``
    float32. Computed as gathered logit − logsumexp, one row at a time in float32, so no full-vocabulary
    log-softmax of the whole batch is ever held."""
    rows = []
    for row, ids in zip(logits, tokens, strict=True):
        row = row.float()
        rows.append(row.gather(-1, ids.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(row, -1))
    return torch.stack(rows)


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
    """1 − Var(returns − values) / Var(returns) over unmasked tokens: 1 is a perfect critic, ≤ 0 no better than a
    constant; nan when the returns are constant."""
    var_returns = masked_var(returns, mask)
    ratio = masked_var(returns - values, mask) / var_returns
    return torch.where(var_returns > 0, 1 - ratio, torch.nan)


class FixedKL:
    """A constant KL coefficient, with the adaptive controller's interface."""

    def __init__(self, coef: float):
        self.coef = float(coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Nothing to adapt."""

    def state_dict(self) -> dict[str, float]:
        """The coefficient, for the controller checkpoint."""
        return {"coef": self.coef}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore the coefficient saved by ``state_dict``."""
        self.coef = float(state["coef"])


class AdaptiveKL(FixedKL):
    """Ziegler et al. (2019): steer the coefficient so the measured KL tracks ``target``.

    err = clip(KL / target − 1, ±0.2); coef ← coef · (1 + err · min(n_steps / horizon, 1)), where ``n_steps``
    counts the samples behind ``current_kl`` and ``horizon`` the samples over which the error is corrected. The
    config keeps horizon ≥ n_steps (KlConfig.check_horizon); the bound keeps one update within ±20% regardless, so
    the coefficient never reaches 0 or flips sign. Only the coefficient is checkpointed: ``target`` and ``horizon``
    come from the config."""

    def __init__(self, coef: float, target: float, horizon: int):
        super().__init__(coef)
        self.target, self.horizon = float(target), int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        """One proportional step towards ``target``."""
        error = min(max(current_kl / self.target - 1, -KL_ERROR_CLIP), KL_ERROR_CLIP)
        self.coef *= 1 + error * min(n_steps / self.horizon, 1)


def kl_controller(coef: float, target: float | None, horizon: int) -> FixedKL:
    """The KL controller for a config: fixed when ``target`` is None, else adaptive."""
    return FixedKL(coef) if target is None else AdaptiveKL(coef, target, horizon)
