"""PPO math against float64 per-token loops and hand-computed values."""

import math

import pytest
import torch

from belle.rlhf.ppo_losses import (
    AdaptiveKL,
    FixedKL,
    entropy_from_logits,
    explained_variance,
    gae,
    kl_controller,
    kl_penalty,
    log_probs_from_logits,
    masked_mean,
    masked_whiten,
    policy_loss,
    value_loss,
)

LENGTHS = [7, 1, 4, 6]  # response lengths of the rows; every tensor is [4, 7] with trailing padding


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    shape = (len(LENGTHS), max(LENGTHS))
    mask = torch.arange(shape[1]) < torch.tensor(LENGTHS).unsqueeze(1)
    return {
        "mask": mask,
        "rewards": torch.randn(shape, generator=g),
        "values": torch.randn(shape, generator=g),
        "logp": -torch.rand(shape, generator=g) * 3,
        "old_logp": -torch.rand(shape, generator=g) * 3,
        "advantages": torch.randn(shape, generator=g),
    }


def gae_loop(rewards, values, length, gamma, lam):
    """Textbook GAE on one row's response tokens, in python floats."""
    advantages, next_value, next_advantage = [0.0] * length, 0.0, 0.0
    for t in reversed(range(length)):
        delta = rewards[t] + gamma * next_value - values[t]
        next_advantage = advantages[t] = delta + gamma * lam * next_advantage
        next_value = values[t]
    return advantages


def test_masked_mean_and_whiten_ignore_padding():
    x = torch.tensor([[1.0, 2.0, math.nan], [3.0, 4.0, 5.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert masked_mean(x, mask).item() == pytest.approx(3.0)
    assert masked_mean(x, mask, dim=1).tolist() == pytest.approx([1.5, 4.0])
    whitened = masked_whiten(x, mask)
    kept = whitened[mask.bool()]
    assert whitened[0, 2] == 0
    assert kept.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert kept.var(unbiased=True).item() == pytest.approx(1.0, rel=1e-5)
    assert masked_whiten(x, mask, shift_mean=False)[mask.bool()].mean().item() == pytest.approx(3.0, rel=1e-5)


def test_masked_whiten_refuses_a_single_value():
    with pytest.raises(ValueError, match="at least 2"):
        masked_whiten(torch.ones(1, 3), torch.tensor([[1, 0, 0]]))


def test_kl_estimators_hand_values():
    logp, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])
    # logp − ref = 0.5, −1.0
    assert kl_penalty(logp, ref, "k1").tolist() == pytest.approx([0.5, -1.0])
    assert kl_penalty(logp, ref, "k2").tolist() == pytest.approx([0.125, 0.5])
    # r = exp(ref − logp) = e^−0.5, e^1
    expected = [math.exp(-0.5) - 1 + 0.5, math.e - 1 - 1.0]
    assert kl_penalty(logp, ref, "k3").tolist() == pytest.approx(expected)
    assert kl_penalty(logp, logp, "k3").tolist() == [0.0, 0.0]


def test_kl_penalty_refuses_an_unknown_estimator():
    with pytest.raises(ValueError, match="k1, k2, k3"):
        kl_penalty(torch.zeros(1), torch.zeros(1), "k4")


@pytest.mark.parametrize("gamma, lam", [(1.0, 0.95), (0.9, 0.8), (0.99, 0.0)])
def test_gae_matches_a_float64_loop(batch, gamma, lam):
    rewards, values, mask = batch["rewards"], batch["values"], batch["mask"]
    values = values.masked_fill(~mask, math.nan)  # padding values never leak in
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    for row, length in enumerate(LENGTHS):
        expected = gae_loop(rewards[row].double().tolist(), values[row].double().tolist(), length, gamma, lam)
        assert advantages[row, :length].tolist() == pytest.approx(expected, rel=1e-5, abs=1e-5)
        assert returns[row, :length].tolist() == pytest.approx(
            [a + v for a, v in zip(expected, values[row].tolist(), strict=False)], rel=1e-5, abs=1e-5
        )
        assert advantages[row, length:].abs().sum() == 0 and returns[row, length:].abs().sum() == 0


def test_gae_with_gamma_lam_one_is_future_reward_sum_minus_value(batch):
    rewards, values, mask = batch["rewards"], batch["values"], batch["mask"]
    advantages, _ = gae(rewards, values, mask, 1.0, 1.0)
    for row, length in enumerate(LENGTHS):
        for t in range(length):
            expected = rewards[row, t:length].sum().item() - values[row, t].item()
            assert advantages[row, t].item() == pytest.approx(expected, abs=1e-5)


def test_gae_carries_over_a_masked_hole():
    rewards, values = torch.tensor([[1.0, 9.0, 2.0, 0.0]]), torch.tensor([[0.5, 9.0, 0.25, 9.0]])
    mask = torch.tensor([[True, False, True, False]])
    advantages, returns = gae(rewards, values, mask, 0.9, 0.8)
    compact, _ = gae(rewards[:, [0, 2]], values[:, [0, 2]], torch.ones(1, 2, dtype=torch.bool), 0.9, 0.8)
    assert advantages[0, [0, 2]].tolist() == pytest.approx(compact[0].tolist())
    assert advantages[0, [1, 3]].tolist() == [0.0, 0.0] and returns[0, [1, 3]].tolist() == [0.0, 0.0]


def policy_loop(logp, old_logp, advantages, mask, clip):
    """Per-token float64 clipped surrogate: summed loss, clipped-token count, token count."""
    total, clipped, count = 0.0, 0, 0
    for lp, olp, a, m in zip(logp.flatten(), old_logp.flatten(), advantages.flatten(), mask.flatten(), strict=True):
        if not m:
            continue
        ratio = math.exp(lp.item() - olp.item())
        unclipped, kept = -a.item() * ratio, -a.item() * min(max(ratio, 1 - clip), 1 + clip)
        total, clipped, count = total + max(unclipped, kept), clipped + (kept > unclipped), count + 1
    return total, clipped, count


def test_policy_loss_matches_a_float64_loop(batch):
    mask = batch["mask"]
    logp = batch["logp"].masked_fill(~mask, -math.inf)  # padding log-probs may be anything
    total, clipped, count = policy_loop(logp.double(), batch["old_logp"].double(), batch["advantages"], mask, 0.2)
    loss, stats = policy_loss(logp, batch["old_logp"], batch["advantages"], mask, 0.2, token_count=count)
    assert loss.item() == pytest.approx(total / count, rel=1e-5)
    assert 0 < clipped < count  # the batch exercises both branches
    assert stats["clip_frac"].item() == pytest.approx(clipped / count)
    log_ratio = (batch["logp"] - batch["old_logp"])[mask]
    assert stats["approx_kl"].item() == pytest.approx(0.5 * log_ratio.square().mean().item(), rel=1e-5)
    assert stats["ratio_mean"].item() == pytest.approx(log_ratio.exp().mean().item(), rel=1e-5)


def test_policy_loss_gradient_is_finite_despite_padding(batch):
    mask = batch["mask"]
    logp = batch["logp"].masked_fill(~mask, -math.inf).requires_grad_()
    loss, _ = policy_loss(logp, batch["old_logp"], batch["advantages"], mask, 0.2, token_count=int(mask.sum()))
    loss.backward()
    assert torch.isfinite(logp.grad).all() and logp.grad[~mask].abs().sum() == 0


def test_first_minibatch_ratio_one_gives_minus_mean_advantage(batch):
    mask = batch["mask"]
    loss, stats = policy_loss(
        batch["logp"], batch["logp"].clone(), batch["advantages"], mask, 0.2, token_count=int(mask.sum())
    )
    assert loss.item() == pytest.approx(-batch["advantages"][mask].mean().item(), rel=1e-6)
    assert stats["clip_frac"].item() == 0
    assert stats["ratio_mean"].item() == 1 and stats["approx_kl"].item() == 0


def test_global_token_count_makes_the_loss_invariant_to_sharding(batch):
    mask, tokens = batch["mask"], int(batch["mask"].sum())

    def run(shards):
        """Each shard's loss over the global token count, summed as DeepSpeed's gradient all-reduce does."""
        logp = batch["logp"].clone().requires_grad_()
        losses = [
            policy_loss(
                logp[rows], batch["old_logp"][rows], batch["advantages"][rows], mask[rows], 0.2, token_count=tokens
            )[0]
            for rows in shards
        ]
        sum(losses).backward()
        return losses, logp.grad

    (whole,), whole_grad = run([slice(0, 4)])
    shards = [slice(0, 1), slice(1, 4)]  # 7 tokens on rank 0, 11 on rank 1
    losses, shard_grad = run(shards)
    assert sum(losses).item() == pytest.approx(whole.item(), rel=1e-6)
    assert torch.allclose(shard_grad, whole_grad, atol=1e-7)
    # each rank's own token mean, averaged over ranks, is another number: the test can tell them apart
    local_means = [loss.item() * tokens / int(mask[rows].sum()) for loss, rows in zip(losses, shards, strict=True)]
    assert sum(local_means) / 2 != pytest.approx(whole.item(), rel=1e-3)


def test_value_loss_matches_a_loop_with_clipping(batch):
    mask, returns = batch["mask"], batch["rewards"]
    old_values = batch["values"]
    values = old_values + torch.linspace(-0.5, 0.5, mask.numel()).view(mask.shape)
    loss, stats = value_loss(values, old_values, returns, mask, 0.2, token_count=int(mask.sum()))
    total, clipped, count = 0.0, 0, 0
    for v, ov, r, m in zip(values.flatten(), old_values.flatten(), returns.flatten(), mask.flatten(), strict=True):
        if m:
            v, ov, r = v.item(), ov.item(), r.item()
            vc = ov + min(max(v - ov, -0.2), 0.2)
            total += 0.5 * max((v - r) ** 2, (vc - r) ** 2)
            clipped, count = clipped + ((vc - r) ** 2 > (v - r) ** 2), count + 1
    assert loss.item() == pytest.approx(total / count, rel=1e-5)
    assert 0 < clipped < count
    assert stats["value_clip_frac"].item() == pytest.approx(clipped / count)


def test_value_loss_without_movement_is_half_the_squared_error(batch):
    mask, values, returns = batch["mask"], batch["values"], batch["rewards"]
    loss, stats = value_loss(values, values, returns, mask, 0.2, token_count=int(mask.sum()))
    assert loss.item() == pytest.approx(0.5 * (values - returns)[mask].square().mean().item(), rel=1e-6)
    assert stats["value_clip_frac"].item() == 0


def test_entropy_of_uniform_logits_is_log_vocab():
    logits = torch.full((2, 3, 11), 4.2, dtype=torch.bfloat16)
    entropy = entropy_from_logits(logits)
    assert entropy.shape == (2, 3) and entropy.dtype == torch.float32
    assert torch.allclose(entropy, torch.full((2, 3), math.log(11)))
    peaked = torch.tensor([[[1000.0, 0.0, 0.0]]])
    assert entropy_from_logits(peaked).item() == pytest.approx(0.0, abs=1e-6)


def test_entropy_matches_a_loop():
    logits = torch.randn(2, 5, 13, generator=torch.Generator().manual_seed(1)) * 3
    entropy = entropy_from_logits(logits)
    for b in range(2):
        for t in range(5):
            p = torch.softmax(logits[b, t].double(), -1)
            assert entropy[b, t].item() == pytest.approx(-(p * p.log()).sum().item(), rel=1e-5)


def test_log_probs_from_logits_matches_a_loop():
    g = torch.Generator().manual_seed(2)
    logits, tokens = torch.randn(3, 4, 17, generator=g) * 5, torch.randint(0, 17, (3, 4), generator=g)
    log_probs = log_probs_from_logits(logits.bfloat16(), tokens)
    assert log_probs.shape == (3, 4) and log_probs.dtype == torch.float32
    exact = log_probs_from_logits(logits, tokens)
    for b in range(3):
        for t in range(4):
            expected = torch.log_softmax(logits[b, t].double(), -1)[tokens[b, t]].item()
            assert exact[b, t].item() == pytest.approx(expected, rel=1e-5, abs=1e-5)
            assert log_probs[b, t].item() == pytest.approx(expected, abs=0.2)  # bf16 logits
    logits.requires_grad_()
    log_probs_from_logits(logits, tokens).sum().backward()
    assert torch.allclose(logits.grad.sum(-1), torch.zeros(3, 4), atol=1e-5)  # d/dz log_softmax sums to 0


def test_explained_variance():
    g = torch.Generator().manual_seed(3)
    returns, mask = torch.randn(3, 6, generator=g), torch.ones(3, 6, dtype=torch.bool)
    mask[1, 4:] = False
    assert explained_variance(returns.masked_fill(~mask, 99.0), returns, mask).item() == pytest.approx(1.0)
    mean = returns[mask].mean().item()
    assert explained_variance(torch.full_like(returns, mean), returns, mask).item() == pytest.approx(0.0, abs=1e-6)
    noisy = returns + 0.5 * torch.randn(3, 6, generator=g)
    assert 0 < explained_variance(noisy, returns, mask).item() < 1


def test_adaptive_kl_hand_computed_update_and_state_round_trip():
    ctl = kl_controller(0.2, target=6.0, horizon=10000)
    assert isinstance(ctl, AdaptiveKL)
    ctl.update(current_kl=9.0, n_steps=256)  # error 0.5 clipped to 0.2
    assert ctl.coef == pytest.approx(0.2 * (1 + 0.2 * 256 / 10000))
    ctl.update(current_kl=5.4, n_steps=512)  # error −0.1
    after = 0.2 * (1 + 0.2 * 256 / 10000) * (1 - 0.1 * 512 / 10000)
    assert ctl.coef == pytest.approx(after)
    restored = AdaptiveKL(0.2, target=6.0, horizon=10000)
    restored.load_state_dict(ctl.state_dict())
    assert restored.coef == ctl.coef
    restored.update(3.0, 100)
    ctl.update(3.0, 100)
    assert restored.coef == ctl.coef < after


def test_fixed_kl_never_moves():
    ctl = kl_controller(0.05, target=None, horizon=10000)
    assert type(ctl) is FixedKL
    ctl.update(100.0, 512)
    assert ctl.coef == 0.05
    ctl.load_state_dict({"coef": 0.1})
    assert ctl.state_dict() == {"coef": 0.1}
