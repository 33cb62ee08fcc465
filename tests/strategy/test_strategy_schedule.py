"""Learning-rate schedule shapes, warmup length and scheduler state round trip."""

import io
import itertools
import math

import pytest
import torch

from belle.config.optim import OptimConfig
from belle.strategy import build_scheduler, lr_multiplier, warmup_steps

TOTAL, WARMUP, MIN = 110, 10, 0.1


def curve(schedule: str, min_lr_ratio: float = MIN) -> list[float]:
    return [lr_multiplier(step, TOTAL, WARMUP, schedule, min_lr_ratio) for step in range(TOTAL + 1)]


@pytest.mark.parametrize("schedule", ["cosine", "linear", "constant"])
def test_warmup_rises_linearly_from_zero_to_peak(schedule):
    lrs = curve(schedule)
    assert lrs[0] == 0.0
    assert lrs[WARMUP // 2] == pytest.approx(0.5)
    assert lrs[WARMUP] == 1.0
    assert all(a < b for a, b in itertools.pairwise(lrs[: WARMUP + 1]))


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_decay_reaches_floor_at_the_end_and_is_halfway_at_the_middle(schedule):
    lrs = curve(schedule)
    middle = WARMUP + (TOTAL - WARMUP) // 2
    assert lrs[middle] == pytest.approx((1 + MIN) / 2)
    assert lrs[TOTAL] == pytest.approx(MIN)
    assert lr_multiplier(TOTAL + 5, TOTAL, WARMUP, schedule, MIN) == pytest.approx(MIN)
    assert all(a >= b for a, b in itertools.pairwise(lrs[WARMUP:]))


def test_cosine_and_linear_differ_in_shape():
    quarter = WARMUP + (TOTAL - WARMUP) // 4
    assert curve("cosine", 0.0)[quarter] == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert curve("linear", 0.0)[quarter] == pytest.approx(0.75)


def test_constant_holds_peak_after_warmup():
    assert curve("constant")[WARMUP:] == [1.0] * (TOTAL - WARMUP + 1)


def test_warmup_steps_from_steps_or_ratio():
    assert warmup_steps(OptimConfig(warmup_steps=100), 1000) == 100
    assert warmup_steps(OptimConfig(warmup_ratio=0.03), 1000) == 30
    assert warmup_steps(OptimConfig(warmup_ratio=0.07), 100) == 7  # 0.07 * 100 = 7.000000000000001
    assert warmup_steps(OptimConfig(warmup_ratio=0.03), 10) == 1
    assert warmup_steps(OptimConfig(), 10) == 0


def test_warmup_longer_than_the_run_is_an_error():
    with pytest.raises(ValueError, match=r"optim.warmup_steps=100 exceeds the run's 50 .*set optim.warmup_steps=5"):
        warmup_steps(OptimConfig(warmup_steps=100), 50)
    with pytest.raises(ValueError, match="strategy.global_batch"):
        warmup_steps(OptimConfig(), 0)


def sgd_with_scheduler(optim: OptimConfig, total: int):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=optim.lr)
    return optimizer, build_scheduler(optimizer, optim, total)


def test_scheduler_sets_the_optimizer_lr_every_step():
    optim = OptimConfig(lr=0.5, warmup_steps=WARMUP, schedule="cosine", min_lr_ratio=MIN)
    optimizer, scheduler = sgd_with_scheduler(optim, TOTAL)
    seen = []
    for _ in range(TOTAL + 1):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([0.5 * m for m in curve("cosine")])


def test_scheduler_state_round_trips_through_a_checkpoint():
    optim = OptimConfig(lr=1.0, warmup_ratio=0.1, schedule="linear", min_lr_ratio=0.0)
    optimizer, scheduler = sgd_with_scheduler(optim, 40)
    for _ in range(7):
        optimizer.step()
        scheduler.step()
    buffer = io.BytesIO()
    torch.save({"scheduler": scheduler.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    resumed_optimizer, resumed = sgd_with_scheduler(optim, 40)
    resumed_optimizer.load_state_dict(saved["optimizer"])
    resumed.load_state_dict(saved["scheduler"])
    assert resumed.last_epoch == 7
    assert resumed_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]
    for _ in range(5):
        for opt, sched in ((optimizer, scheduler), (resumed_optimizer, resumed)):
            opt.step()
            sched.step()
        assert resumed.get_last_lr() == scheduler.get_last_lr()
