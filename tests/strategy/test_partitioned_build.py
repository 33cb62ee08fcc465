"""Under ZeRO-3 a model is partitioned as it is built or loaded: no rank ever holds it whole (2 CPU workers, gloo)."""

import pytest
from distributed import spawn


def _build(job, world: int) -> dict:
    """Build the job's engine as the recipe does; what this rank holds and the gathered weights' checksum."""
    import deepspeed
    import torch.distributed as dist

    from belle.strategy.engine import build_engine

    deepspeed.init_distributed(dist_backend="gloo")
    engine = build_engine(
        job.model, job.strategy, job.optim, job.method.lora, attention="sdpa", world_size=world, total_steps=1,
        seed=job.train.seed,
    )
    params = list(engine.module.parameters())
    with deepspeed.zero.GatheredParameters(params):
        checksum = sum(p.double().sum().item() for p in params)
    return {
        "held": sum(p.numel() for p in params),  # the full-size views are empty: the data lives in the partitions
        "partition": sum(p.ds_tensor.numel() for p in params),
        "full": sum(p.ds_numel for p in params),
        "dtype": str({p.ds_tensor.dtype for p in params}),
        "checksum": checksum,
        "rank": dist.get_rank(),
    }


@pytest.mark.slow
@pytest.mark.parametrize("source", ["random_init", "checkpoint"])
def test_zero3_partitions_at_build_and_load(job, tmp_path, workers_env, source):
    import torch

    from belle.model.load import build_model

    overrides = ["method=sft", "strategy.micro_batch=1", "strategy.global_batch=2", "strategy.precision=bf16",
                 "optim.warmup_steps=0"]
    if source == "checkpoint":
        saved = build_model(job().model, "sdpa", dtype=torch.bfloat16, seed=7)
        saved.save_pretrained(tmp_path / "model")
        overrides.append(f"model.path={tmp_path / 'model'}")
    ranks = spawn(_build, job(*overrides), 2)
    for held in ranks:
        assert held["held"] == 0, "a rank holds full-size parameters"
        assert held["partition"] <= held["full"] / 2 + 1024, "each rank holds about half of the model"
        assert held["dtype"] == "{torch.bfloat16}"
    assert ranks[0]["checksum"] == ranks[1]["checksum"]
    if source == "checkpoint":  # the weights are the checkpoint's, read on rank 0 and scattered
        assert ranks[0]["checksum"] == pytest.approx(sum(p.double().sum().item() for p in saved.parameters()))
