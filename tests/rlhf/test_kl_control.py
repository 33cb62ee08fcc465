"""The adaptive KL controller cannot steer the wrong way: a coefficient that starts at 0 is refused (it would stay 0),
a horizon shorter than one step's sequences is refused at compose time with the smallest one that works, and the
controller itself keeps every update within ±KL_ERROR_CLIP, so the coefficient never reaches 0 or turns negative."""

import pytest

from belle.config.ppo import KL_ERROR_CLIP, KlConfig, PpoConfig
from belle.rlhf.ppo_losses import AdaptiveKL


def _formula(coef: float, kl: float, target: float, n_steps: int, horizon: int) -> float:
    """Ziegler et al.'s update as written: coef · (1 + clip(kl / target − 1, ±0.2) · n_steps / horizon)."""
    return coef * (1 + min(max(kl / target - 1, -0.2), 0.2) * n_steps / horizon)


def _resolved(sequences: int, horizon: int) -> PpoConfig:
    ppo = PpoConfig(kl=KlConfig(coef=0.2, target=6.0, horizon=horizon))
    ppo.resolve(global_batch=sequences, max_length=1024, actor_micro_batch=4, world_size=2)
    return ppo


def test_a_zero_start_coefficient_with_a_target_is_refused():
    with pytest.raises(ValueError) as info:
        KlConfig(coef=0.0, target=6.0)
    assert str(info.value) == (
        "method.ppo.kl.coef=0 with method.ppo.kl.target=6 stays 0 for good (the adaptive controller multiplies the "
        "coefficient): set method.ppo.kl.coef=0.2, or method.ppo.kl.target=null for no KL penalty")
    assert KlConfig(coef=0.0).coef == 0.0  # a fixed zero (no penalty) is a choice


@pytest.mark.parametrize("sequences", [8, 32, 256, 512])
def test_the_smallest_accepted_horizon_is_one_steps_sequences(sequences):
    assert _resolved(sequences, sequences).kl.horizon == sequences
    ctl = AdaptiveKL(0.2, target=6.0, horizon=sequences)
    ctl.update(current_kl=0.0, n_steps=sequences)  # the largest step down: error −1 clipped to −0.2
    assert ctl.coef == pytest.approx(_formula(0.2, 0.0, 6.0, sequences, sequences), rel=1e-15)
    assert ctl.coef == pytest.approx(0.2 * (1 - KL_ERROR_CLIP), rel=1e-15)
    with pytest.raises(ValueError) as info:
        _resolved(sequences, sequences - 1)
    worst = _formula(1.0, 0.0, 6.0, sequences, sequences - 1)
    assert 0 < worst < 1 - KL_ERROR_CLIP
    assert str(info.value) == (
        f"method.ppo.kl.horizon={sequences - 1} is shorter than the {sequences} sequences of one PPO step: one update "
        f"could multiply method.ppo.kl.coef by as little as {worst:.3g} (0 or less turns the KL penalty into a "
        f"bonus): set method.ppo.kl.horizon={sequences} or more (default 10000)")


def test_a_horizon_that_would_make_the_coefficient_negative_is_refused_with_the_factor():
    """ppo_7b's 512 sequences with horizon 100: the formula multiplies by 1 − 0.2 · 512 / 100 = −0.024."""
    assert _formula(0.2, 0.0, 6.0, 512, 100) < 0
    with pytest.raises(ValueError, match=r"^method.ppo.kl.horizon=100 is shorter than the 512 sequences of one PPO "
                                         r"step: one update could multiply method.ppo.kl.coef by as little as -0.024 "):
        _resolved(512, 100)
    assert _resolved(512, 10000).kl.horizon == 10000
    fixed = PpoConfig(kl=KlConfig(coef=0.2, horizon=1))  # no target: the horizon is never read
    fixed.resolve(global_batch=512, max_length=1024, actor_micro_batch=4, world_size=2)


def test_the_controller_bounds_an_update_the_config_would_refuse():
    """Defence in depth: fed more samples than its horizon, one update still moves the coefficient by at most
    ±KL_ERROR_CLIP, where the unbounded formula would make it negative."""
    low = AdaptiveKL(0.2, target=6.0, horizon=100)
    for _ in range(200):
        low.update(current_kl=0.0, n_steps=512)
    assert low.coef == pytest.approx(0.2 * (1 - KL_ERROR_CLIP) ** 200, rel=1e-12) and low.coef > 0
    high = AdaptiveKL(0.2, target=6.0, horizon=100)
    high.update(current_kl=60.0, n_steps=512)
    assert high.coef == pytest.approx(0.2 * (1 + KL_ERROR_CLIP), rel=1e-15)


@pytest.mark.parametrize("kl", [0.0, 3.0, 5.9, 6.0, 6.6, 9.0, 100.0])
def test_within_the_horizon_every_update_is_the_formula(kl):
    ctl = AdaptiveKL(0.2, target=6.0, horizon=10000)
    expected = 0.2
    for _ in range(50):
        ctl.update(current_kl=kl, n_steps=512)
        expected = _formula(expected, kl, 6.0, 512, 10000)
    assert ctl.coef == pytest.approx(expected, rel=1e-13)
