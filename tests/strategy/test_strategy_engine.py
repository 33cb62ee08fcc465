"""A real DeepSpeed engine (one CPU process, gloo) trains with our config and follows our lr schedule."""

import copy
import os
import socket

import pytest
import torch

from belle.config.optim import OptimConfig
from belle.config.strategy import StrategyConfig
from belle.strategy import build_scheduler, deepspeed_config, lr_multiplier, warmup_steps

STEPS = 4


@pytest.fixture
def single_process_group(tmp_path, monkeypatch):
    """Rendezvous env for one gloo rank; the JIT-built ops go to $TORCH_EXTENSIONS_DIR if set (a cache)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "LOCAL_RANK": "0"}
    env |= {"WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1", "TMPDIR": str(tmp_path)}
    env["TORCH_EXTENSIONS_DIR"] = os.environ.get("TORCH_EXTENSIONS_DIR", str(tmp_path / "torch_extensions"))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    yield
    import deepspeed

    if torch.distributed.is_initialized():
        deepspeed.comm.destroy_process_group()


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


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stage", "offload", "basic_optimizer"), [(2, False, "AdamW"), (3, True, "DeepSpeedCPUAdam")]
)
def test_engine_uses_our_schedule(single_process_group, stage, offload, basic_optimizer):
    import deepspeed

    strategy = StrategyConfig(
        zero_stage=stage,
        offload_optimizer=offload,
        precision="fp32",
        micro_batch=2,
        global_batch=4,
        grad_clip=0,
    )
    optim = OptimConfig(lr=0.05, weight_decay=0.1, warmup_steps=2, schedule="cosine", min_lr_ratio=0.2)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    expected_weights, expected_lrs = reference_run(copy.deepcopy(model), optim, accumulation=2)

    engine, _, _, scheduler = deepspeed.initialize(
        model=model,
        model_parameters=model.parameters(),
        config=deepspeed_config(strategy, optim, world_size=1),
        lr_scheduler=lambda optimizer: build_scheduler(optimizer, optim, STEPS),
    )
    assert type(engine.basic_optimizer).__name__ == basic_optimizer  # torch's (fused) AdamW: no op built with nvcc
    if not offload:
        assert engine.basic_optimizer.defaults["fused"] is True
    assert engine.lr_scheduler is scheduler and isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR)
    lrs = []
    for x in batches(STEPS * 2):
        if engine.is_gradient_accumulation_boundary():
            lrs.append(engine.basic_optimizer.param_groups[0]["lr"])
        engine.backward(engine(x).pow(2).mean())
        engine.step()

    warmup = warmup_steps(optim, STEPS)
    schedule = [optim.lr * lr_multiplier(s, STEPS, warmup, "cosine", 0.2) for s in range(STEPS)]
    assert lrs == pytest.approx(schedule) == expected_lrs
    assert engine.global_steps == STEPS
    with deepspeed.zero.GatheredParameters(list(engine.module.parameters())):
        weights = [p.detach().clone() for p in engine.module.parameters()]
    for got, want in zip(weights, expected_weights, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
