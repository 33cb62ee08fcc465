"""A real DeepSpeed engine (one fresh process; on CPU, gloo) trains with our config and follows our lr schedule."""


import pytest
import torch

from belle.config.optim import OptimConfig
from belle.config.strategy import StrategyConfig
from belle.strategy import build_scheduler, deepspeed_config, lr_multiplier, warmup_steps

STEPS = 4


def batches(count: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(2, 4, generator=generator) for _ in range(count)]


def reference_run(model: torch.nn.Module, optim: OptimConfig, accumulation: int) -> tuple[list, list]:
    """The same training with torch.optim.AdamW and our scheduler: weights and lr per step."""
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=optim.lr,
        betas=(optim.beta1, optim.beta2),
        eps=optim.eps,
        weight_decay=optim.weight_decay,
    )
    scheduler = build_scheduler(optimizer, optim, STEPS)
    lrs = []
    for index, x in enumerate(batches(STEPS * accumulation)):
        (model(x).pow(2).mean() / accumulation).backward()
        if (index + 1) % accumulation == 0:
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
    return [p.detach().clone() for p in model.parameters()], lrs


OPTIM = OptimConfig(lr=0.05, weight_decay=0.1, warmup_steps=2, schedule="cosine", min_lr_ratio=0.2)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def _engine_run(stage: int, offload: bool) -> dict:
    """Train _model() with a DeepSpeed engine built from our config, in a fresh process (no engine, ZeRO context or
    communication state of another test in it): what the test compares."""
    import deepspeed

    strategy = StrategyConfig(
        zero_stage=stage, offload_optimizer=offload, precision="fp32", micro_batch=2, global_batch=4, grad_clip=0,
    )
    model = _model()
    engine, _, _, scheduler = deepspeed.initialize(
        model=model,
        model_parameters=model.parameters(),
        config=deepspeed_config(strategy, OPTIM, world_size=1),
        lr_scheduler=lambda optimizer: build_scheduler(optimizer, OPTIM, STEPS),
    )
    lrs = []
    for x in batches(STEPS * 2):
        if engine.is_gradient_accumulation_boundary():
            lrs.append(engine.basic_optimizer.param_groups[0]["lr"])
        engine.backward(engine(x.to(engine.device)).pow(2).mean())
        engine.step()
    with deepspeed.zero.GatheredParameters(list(engine.module.parameters())):
        weights = [p.detach().cpu().clone() for p in engine.module.parameters()]
    return {
        "optimizer": type(engine.basic_optimizer).__name__, "fused": engine.basic_optimizer.defaults.get("fused"),
        "our_scheduler": engine.lr_scheduler is scheduler and isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR),
        "lrs": lrs, "steps": engine.global_steps, "weights": weights,
    }


@pytest.mark.parametrize(("stage", "offload", "basic_optimizer"), [
    (2, False, "AdamW"),
    # ZeRO-Offload's optimizer is DeepSpeed's CPU Adam, a C++ op compiled on first use (over a minute on 2 cores):
    # checked where offloading is for, beside a GPU
    pytest.param(3, True, "DeepSpeedCPUAdam", marks=pytest.mark.gpu),
])
def test_engine_uses_our_schedule(workers_env, stage, offload, basic_optimizer):
    from distributed import spawn

    if offload and not torch.cuda.is_available():
        pytest.skip("needs CUDA")

    expected_weights, expected_lrs = reference_run(_model(), OPTIM, accumulation=2)
    got = spawn(_engine_run, stage, offload, world=1)[0]
    assert got["optimizer"] == basic_optimizer  # torch's (fused) AdamW: no op built with nvcc
    assert offload or got["fused"] is True
    assert got["our_scheduler"]
    warmup = warmup_steps(OPTIM, STEPS)
    schedule = [OPTIM.lr * lr_multiplier(s, STEPS, warmup, "cosine", 0.2) for s in range(STEPS)]
    assert got["lrs"] == pytest.approx(schedule) == expected_lrs
    assert got["steps"] == STEPS
    for weight, want in zip(got["weights"], expected_weights, strict=True):
        torch.testing.assert_close(weight, want, rtol=1e-5, atol=1e-6)
