"""Gradient accumulation from global batch, micro batch and world size, and the divisibility error."""

import re

import pytest

from belle.config.strategy import StrategyConfig
from belle.strategy import grad_accumulation, optimizer_steps


@pytest.mark.parametrize(
    ("global_batch", "micro_batch", "world_size", "expected"),
    [(32, 1, 1, 32), (32, 2, 4, 4), (128, 4, 8, 4), (6, 3, 2, 1)],
)
def test_accumulation_is_global_over_micro_times_world(global_batch, micro_batch, world_size, expected):
    strategy = StrategyConfig(global_batch=global_batch, micro_batch=micro_batch)
    assert grad_accumulation(strategy, world_size) == expected


def test_error_names_nearest_global_batch_and_a_smaller_micro_batch():
    with pytest.raises(ValueError) as error:
        grad_accumulation(StrategyConfig(global_batch=32, micro_batch=3), 2)
    assert str(error.value) == (
        "strategy.micro_batch=3 × world size 2 = 6 does not divide strategy.global_batch=32: "
        "set strategy.global_batch=30 or strategy.micro_batch=2"
    )


def test_error_suggests_no_micro_batch_when_world_size_does_not_divide():
    with pytest.raises(ValueError, match=r"set strategy.global_batch=33$"):
        grad_accumulation(StrategyConfig(global_batch=32, micro_batch=1), 3)


def test_every_suggestion_works():
    for global_batch in range(1, 41):
        for micro_batch in range(1, 6):
            for world_size in range(1, 5):
                strategy = StrategyConfig(global_batch=global_batch, micro_batch=micro_batch)
                try:
                    grad_accumulation(strategy, world_size)
                except ValueError as error:
                    fixes = dict(re.findall(r"strategy\.(\w+)=(\d+)", str(error).split(": set ")[1]))
                    assert fixes, str(error)
                    for key, value in fixes.items():
                        fixed = StrategyConfig(global_batch=global_batch, micro_batch=micro_batch)
                        setattr(fixed, key, int(value))
                        assert grad_accumulation(fixed, world_size) >= 1


def test_optimizer_steps_round_down_as_the_ranks_take_rows():
    """601 rows on 2 ranks: 300 each (one dropped); each rank takes micro 2 x accumulation 2 = 4 rows a step."""
    strategy = StrategyConfig(micro_batch=2, global_batch=8)
    assert optimizer_steps(601, strategy, 2, epochs=1) == 300 // 4 == 75
    assert optimizer_steps(601, strategy, 2, epochs=1.5) == 450 // 4 == 112
    assert optimizer_steps(601, strategy, 2, epochs=3, max_steps=100) == 100
    assert optimizer_steps(7, strategy, 2, epochs=1) == 0
