"""The pair losses equal a float64 loop over the pairs written from the papers' formulas."""

import math

import pytest
import torch

from belle.rlhf.pair_losses import dpo_loss, pairwise_loss, sequence_log_probs


def _logsigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def _pairs(n: int = 7, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(n, generator=generator, dtype=torch.float64) * 3 for _ in range(4)]


@pytest.mark.parametrize("margin,center", [(0.0, 0.0), (0.5, 0.0), (0.0, 0.01), (1.0, 0.1)])
def test_pairwise_loss_is_the_per_pair_formula(margin, center):
    chosen, rejected, *_ = _pairs()
    expected = [-_logsigmoid(c - r - margin) + center * (c + r) ** 2
                for c, r in zip(chosen.tolist(), rejected.tolist(), strict=True)]
    assert pairwise_loss(chosen, rejected, margin, center).tolist() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("beta,smoothing", [(0.1, 0.0), (0.5, 0.0), (0.1, 0.2)])
def test_dpo_sigmoid_loss_and_rewards_are_the_per_pair_formula(beta, smoothing):
    pc, pr, rc, rr = _pairs()
    loss, chosen, rejected = dpo_loss(pc, pr, rc, rr, beta, "sigmoid", smoothing)
    for i in range(len(pc)):
        h = (pc[i] - rc[i] - pr[i] + rr[i]).item()
        expected = -(1 - smoothing) * _logsigmoid(beta * h) - smoothing * _logsigmoid(-beta * h)
        assert loss[i].item() == pytest.approx(expected, abs=1e-12)
        assert chosen[i].item() == pytest.approx(beta * (pc[i] - rc[i]).item(), abs=1e-12)
        assert rejected[i].item() == pytest.approx(beta * (pr[i] - rr[i]).item(), abs=1e-12)


def test_ipo_loss_is_the_squared_distance_to_half_over_beta():
    pc, pr, rc, rr = _pairs()
    beta = 0.25
    loss, _, _ = dpo_loss(pc, pr, rc, rr, beta, "ipo")
    expected = [((a - c) - (b - d) - 1 / (2 * beta)) ** 2 for a, b, c, d in
                zip(pc.tolist(), pr.tolist(), rc.tolist(), rr.tolist(), strict=True)]
    assert loss.tolist() == pytest.approx(expected, abs=1e-12)


def test_a_policy_equal_to_its_reference_costs_ln2():
    pc, pr, _, _ = _pairs()
    loss, chosen, rejected = dpo_loss(pc, pr, pc.clone(), pr.clone(), 0.1)
    assert loss.tolist() == pytest.approx([math.log(2)] * len(pc), abs=1e-15)
    assert not chosen.any() and not rejected.any()


def test_label_smoothing_pulls_a_confident_pair_back():
    pc, pr, rc, rr = (torch.tensor([v], dtype=torch.float64) for v in (0.0, -50.0, 0.0, 0.0))
    plain, smoothed = (dpo_loss(pc, pr, rc, rr, 0.1, "sigmoid", eps)[0].item() for eps in (0.0, 0.2))
    assert plain < 0.01 < smoothed  # a confidently right pair still costs eps * its mistake's loss


def test_sequence_log_probs_sum_the_masked_tokens_after_the_shift():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 6, 11, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 11, (3, 6), generator=generator)
    mask = torch.zeros(3, 6, dtype=torch.bool)
    mask[0, 2:] = mask[1, 5] = mask[2, 1:4] = True
    expected = []
    for s in range(3):
        total = 0.0
        for t in range(1, 6):
            if mask[s, t]:
                row = logits[s, t - 1]
                total += (row[labels[s, t]] - torch.logsumexp(row, 0)).item()
        expected.append(total)
    assert sequence_log_probs(logits, labels, mask).tolist() == pytest.approx(expected, abs=1e-12)
    half = sequence_log_probs(logits.to(torch.bfloat16), labels, mask)
    assert half.dtype == torch.float32  # computed in float32 from half-precision logits
