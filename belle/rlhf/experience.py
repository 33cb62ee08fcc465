"""Experience from sampled responses: which tokens count, the per-token rewards, and running reward moments.

Responses are ``[batch, len]`` token ids as generated: right-padded after the EOS (or not ended at all).
"""

import math

import torch
from torch import Tensor


def response_mask(responses: Tensor, eos_id: int, pad_id: int) -> tuple[Tensor, Tensor]:
    """→ ``(mask, ended)``: ``mask`` [batch, len] bool is true up to and including each row's first EOS, false after
    it; a row without EOS (cut at the token limit) keeps every token up to its last non-pad one. ``ended`` [batch]
    bool says which rows have an EOS. ``pad_id`` may equal ``eos_id``."""
    length = responses.shape[1]
    is_eos = responses == eos_id
    ended = is_eos.any(1)
    first_eos = is_eos.int().argmax(1)  # argmax gives the first maximum
    not_pad = responses != pad_id
    last_real = length - 1 - not_pad.flip(1).int().argmax(1)
    unended_length = torch.where(not_pad.any(1), last_real + 1, 0)
    lengths = torch.where(ended, first_eos + 1, unended_length)
    return torch.arange(length, device=responses.device) < lengths.unsqueeze(1), ended


def token_rewards(
    score: Tensor,
    kl: Tensor,
    mask: Tensor,
    ended: Tensor,
    *,
    kl_coef: float,
    clip: float,
    missing_eos_penalty: float,
) -> Tensor:
    """Per-token rewards [batch, len]: −kl_coef·kl_t on response tokens, plus clip(score, ±clip) at each row's last
    response token (its EOS when it ended), minus ``missing_eos_penalty`` there for rows that did not end; 0 on
    masked tokens. ``score`` is one number per row, already normalised."""
    mask = mask.bool()
    has_token = mask.any(1)
    if not has_token.all():
        empty = has_token.logical_not().nonzero().flatten().tolist()
        raise ValueError(f"rows {empty} have no response token to carry their score: build the mask with response_mask")
    rewards = torch.where(mask, -kl_coef * kl, 0)
    last = mask.shape[1] - 1 - mask.flip(1).int().argmax(1)
    final = score.to(rewards.dtype).clamp(-clip, clip) - missing_eos_penalty * ended.logical_not().to(rewards.dtype)
    rows = torch.arange(mask.shape[0], device=mask.device)
    rewards[rows, last] += final
    return rewards


class RunningMoments:
    """Count, mean and variance of every value seen (Welford/Chan), for reward normalisation.

    Ranks merge through ``(count, mean, m2)`` triples (``moments`` of a local batch, then ``merge`` of each), so the
    merged moments equal those of the concatenated values whatever the split."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    @staticmethod
    def moments(values: Tensor) -> tuple[int, float, float]:
        """``(count, mean, m2)`` of a batch: m2 is the sum of squared deviations from the mean, in float64."""
        values = values.detach().double().flatten()
        if values.numel() == 0:
            return 0, 0.0, 0.0
        mean = values.mean()
        return values.numel(), mean.item(), (values - mean).square().sum().item()

    def merge(self, count: int, mean: float, m2: float) -> None:
        """Add the moments of another set of values (Chan et al.'s parallel update)."""
        if count == 0:
            return
        total = self.count + count
        delta = mean - self.mean
        self.mean += delta * count / total
        self.m2 += m2 + delta * delta * self.count * count / total
        self.count = total

    def update(self, values: Tensor) -> None:
        """Add a batch of values."""
        self.merge(*self.moments(values))

    @property
    def var(self) -> float:
        """Unbiased variance of everything seen."""
        if self.count < 2:
            raise ValueError(f"a variance needs at least 2 values, got {self.count}: update with a batch first")
        return self.m2 / (self.count - 1)

    @property
    def std(self) -> float:
        """Unbiased standard deviation of everything seen."""
        return math.sqrt(self.var)

    def normalize(self, values: Tensor) -> Tensor:
        """``values`` centred and scaled by the running mean and standard deviation."""
        return (values - self.mean) / (self.std + 1e-8)

    def state_dict(self) -> dict[str, float]:
        """The moments, for the controller checkpoint."""
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore the moments saved by ``state_dict``."""
        self.count, self.mean, self.m2 = int(state["count"]), float(state["mean"]), float(state["m2"])
