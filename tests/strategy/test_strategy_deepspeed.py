"""The generated DeepSpeed config, checked by DeepSpeed's own parser, and the raw-JSON merge."""

import itertools
import json

import pytest

from belle.config.optim import OptimConfig
from belle.config.strategy import PRECISIONS, StrategyConfig
from belle.strategy import deepspeed_config
from belle.strategy.deepspeed import COMM_BUCKET

WORLD = 4


def valid_strategies():
    for stage, offload_optimizer, offload_params, precision in itertools.product(
        range(4), (False, True), (False, True), PRECISIONS
    ):
        if (offload_optimizer and stage == 0) or (offload_params and stage != 3):
            continue
        yield StrategyConfig(
            zero_stage=stage,
            offload_optimizer=offload_optimizer,
            offload_params=offload_params,
            precision=precision,
            micro_batch=2,
            global_batch=32,
        )


STRATEGIES = list(valid_strategies())


def parse(config: dict, monkeypatch, world_size: int = WORLD):
    """DeepSpeed's own config object for ``config`` on ``world_size`` ranks, without a process group."""
    import deepspeed.runtime.config as ds_config

    class DataParallel:
        def get_data_parallel_world_size(self):
            return world_size

    monkeypatch.setattr(ds_config.dist, "get_rank", lambda: 0)
    return ds_config.DeepSpeedConfig(config, mpu=DataParallel())


@pytest.mark.parametrize(
    "strategy",
    STRATEGIES,
    ids=lambda s: f"z{s.zero_stage}-{s.precision}-oo{int(s.offload_optimizer)}-op{int(s.offload_params)}",
)
def test_deepspeed_parses_every_combination_as_we_meant(strategy, monkeypatch):
    optim = OptimConfig(lr=5e-6, beta2=0.95, weight_decay=0.1)
    config = deepspeed_config(strategy, optim, WORLD)
    parsed = parse(json.loads(json.dumps(config)), monkeypatch)

    assert parsed.world_size == WORLD
    assert parsed.train_batch_size == 32
    assert parsed.train_micro_batch_size_per_gpu == 2
    assert parsed.gradient_accumulation_steps == 4
    assert parsed.zero_optimization_stage == strategy.zero_stage
    zero = parsed.zero_config
    assert zero.offload_optimizer.device == ("cpu" if strategy.offload_optimizer else "none")
    assert zero.offload_param.device == ("cpu" if strategy.offload_params else "none")
    assert zero.gather_16bit_weights_on_model_save == (strategy.zero_stage == 3)
    assert parsed.bfloat16_config.enabled == (strategy.precision == "bf16")
    assert parsed.float16_config.enabled == (strategy.precision == "fp16")
    if strategy.precision == "fp16":
        fp16 = parsed.float16_config
        assert (fp16.loss_scale, fp16.initial_scale_power, fp16.loss_scale_window) == (0, 16, 1000)
        assert (fp16.hysteresis, fp16.min_loss_scale) == (2, 1)
    assert parsed.gradient_clipping == 1.0
    assert parsed.optimizer_name == "adamw"
    adam = {"lr": 5e-6, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.1}
    # DeepSpeed's CPU Adam when offloaded; else torch's fused AdamW, never the FusedAdam op JIT-built with nvcc
    torch_adam = {} if strategy.offload_optimizer else {"torch_adam": True, "fused": True}
    assert parsed.optimizer_params == adam | torch_adam
    if strategy.zero_stage:  # buckets of 2e8 elements, as belle.strategy.estimate counts them
        assert zero.reduce_bucket_size == zero.allgather_bucket_size == COMM_BUCKET
    assert parsed.scheduler_name is None  # our schedule is passed to deepspeed.initialize, never replaced
    assert parsed.wall_clock_breakdown is False


def test_indivisible_batch_is_the_accumulation_error():
    with pytest.raises(ValueError, match="does not divide strategy.global_batch=32"):
        deepspeed_config(StrategyConfig(micro_batch=3), OptimConfig(), 2)


def with_json(tmp_path, raw, **strategy) -> dict:
    path = tmp_path / "ds.json"
    path.write_text(raw if isinstance(raw, str) else json.dumps(raw))
    config = StrategyConfig(micro_batch=2, global_batch=32, deepspeed_json=str(path), **strategy)
    return deepspeed_config(config, OptimConfig(lr=2e-4), WORLD)


def test_json_adds_keys_and_keeps_ours(tmp_path, monkeypatch):
    raw = {
        "zero_optimization": {"reduce_bucket_size": 10_000_000, "stage3_max_live_parameters": 5},
        "activation_checkpointing": {"partition_activations": True},
        "train_batch_size": 32,
    }
    merged = with_json(tmp_path, raw)
    generated = deepspeed_config(StrategyConfig(micro_batch=2, global_batch=32), OptimConfig(lr=2e-4), WORLD)
    assert merged["zero_optimization"] == generated["zero_optimization"] | raw["zero_optimization"]
    assert merged["activation_checkpointing"] == {"partition_activations": True}
    parsed = parse(merged, monkeypatch)
    assert parsed.zero_config.reduce_bucket_size == 10_000_000
    assert parsed.zero_config.max_live_parameters == 5
    assert parsed.zero_optimization_stage == 3


def test_hf_style_auto_values_are_ours(tmp_path, monkeypatch):
    raw = {
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto", "loss_scale": 0},
        "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto"}},
        "zero_optimization": {
            "stage": 3,
            "reduce_bucket_size": "auto",
            "stage3_prefetch_bucket_size": "auto",
        },
    }
    merged = with_json(tmp_path, raw, precision="fp16")
    assert "auto" not in json.dumps(merged)
    generated = deepspeed_config(
        StrategyConfig(micro_batch=2, global_batch=32, precision="fp16"), OptimConfig(lr=2e-4), WORLD
    )
    assert merged == generated
    parsed = parse(merged, monkeypatch)
    assert parsed.zero_config.reduce_bucket_size == COMM_BUCKET  # "auto" keeps ours
    assert parsed.float16_config.enabled and parsed.gradient_accumulation_steps == 4


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"zero_optimization": {"stage": 2}},
            (
                "deepspeed_json sets zero_optimization.stage=2 but strategy.zero_stage=3: "
                "set strategy.zero_stage=2 or remove it from the JSON"
            ),
        ),
        (
            {"train_batch_size": 64},
            (
                "deepspeed_json sets train_batch_size=64 but strategy.global_batch=32: "
                "set strategy.global_batch=64 or remove it from the JSON"
            ),
        ),
        ({"train_micro_batch_size_per_gpu": 4}, "set strategy.micro_batch=4 or remove it from the JSON"),
        (
            {"gradient_accumulation_steps": 2},
            (
                "deepspeed_json sets gradient_accumulation_steps=2 but strategy.global_batch=32 / "
                "(strategy.micro_batch × world size 8) = 4: set strategy.global_batch=16 or remove it from the JSON"
            ),
        ),
        (
            {"fp16": {"enabled": True}},
            (
                "deepspeed_json sets fp16.enabled=true but strategy.precision=bf16: "
                "set strategy.precision=fp16 or remove it from the JSON"
            ),
        ),
        ({"bf16": {"enabled": False}}, "set strategy.precision=fp32 or remove it"),
        ({"gradient_clipping": 0.5}, "but strategy.grad_clip=1.0: set strategy.grad_clip=0.5 or"),
        ({"optimizer": {"params": {"lr": 1e-3}}}, "but optim.lr=0.0002: set optim.lr=0.001 or"),
        (
            {"optimizer": {"params": {"betas": [0.9, 0.95]}}},
            "but optim.beta1=0.9 optim.beta2=0.999: set optim.beta1=0.9 optim.beta2=0.95 or",
        ),
        (
            {"zero_optimization": {"offload_optimizer": {"device": "cpu"}}},
            (
                'sets zero_optimization.offload_optimizer.device="cpu" but strategy.offload_optimizer=false: '
                "set strategy.offload_optimizer=true or"
            ),
        ),
        ({"zero_optimization": 3}, "deepspeed_json sets zero_optimization=3, but it must be an object"),
    ],
)
def test_json_contradicting_the_typed_config_is_an_error(tmp_path, raw, message):
    with pytest.raises(ValueError) as error:
        with_json(tmp_path, raw)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_json_restating_our_values_is_fine(tmp_path):
    raw = {
        "zero_optimization": {"stage": 3},
        "train_batch_size": 32,
        "gradient_clipping": 1,
        "bf16": {"enabled": True},
    }
    assert with_json(tmp_path, raw)["zero_optimization"]["stage"] == 3


def test_json_scheduler_block_is_an_error(tmp_path):
    raw = {"scheduler": {"type": "WarmupDecayLR", "params": {"warmup_num_steps": "auto"}}}
    with pytest.raises(ValueError, match=r'has a "scheduler" block.*set optim.schedule'):
        with_json(tmp_path, raw)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [("{not json", "is not valid JSON \\(line 1"), ("[1, 2]", "is not a JSON object")],
)
def test_bad_json_file_is_a_one_line_error_with_its_path(tmp_path, raw, problem):
    with pytest.raises(ValueError, match=f"strategy.deepspeed_json={tmp_path / 'ds.json'} {problem}"):
        with_json(tmp_path, raw)


def test_missing_json_file_is_an_error_with_its_path(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(ValueError, match=f"strategy.deepspeed_json={missing} cannot be read"):
        deepspeed_config(StrategyConfig(deepspeed_json=str(missing)), OptimConfig(), 1)
