"""The memory estimate follows ZeRO's accounting closely enough to tell what fits."""

from belle.config.hardware import GIB
from belle.strategy.estimate import memory_per_gpu

LLAMA_7B = 6_738_415_616


def _memory(job, *overrides):
    j = job("+exp=ft_2m", *overrides)
    return memory_per_gpu(j, LLAMA_7B, LLAMA_7B, 202_383_360)


def test_zero_stages_shard_model_states(job):
    z0, z2, z3 = (_memory(job, f"strategy.zero_stage={s}") for s in (0, 2, 3))
    assert z0.weights == z2.weights == 2 * LLAMA_7B and z3.weights == 2 * LLAMA_7B / 8
    assert z0.gradients == 2 * LLAMA_7B and z2.gradients == z3.gradients == 2 * LLAMA_7B / 8
    assert z0.optimizer == 12 * LLAMA_7B and z3.optimizer == 12 * LLAMA_7B / 8
    # BELLE users' question: 7B full fine-tune on 8xA100-40GB fits with ZeRO-3, not with plain data parallel.
    assert z3.total < 40 * GIB < z0.total


def test_offload_moves_states_off_the_gpu(job):
    m = _memory(job, "strategy=zero3_offload")
    assert m.optimizer == 0 and m.weights == 0 and m.zero3_working_set > 0


def test_checkpointing_cuts_activations(job):
    assert _memory(job, "strategy.activation_checkpointing=false").activations > 5 * _memory(job).activations


def test_zero_communication_buckets_are_counted(job):
    """2e8-element buckets (DeepSpeed's 5e8 default would keep 2 GB of bf16 reduce buffers under ZeRO-2)."""
    z1, z2, z3 = (_memory(job, f"strategy.zero_stage={s}").comm_buckets for s in (1, 2, 3))
    assert z2 == 3 * 2e8 * 2 and z1 == 2 * 2e8 * 2 and z3 == 2 * 2e8 * 2
    assert _memory(job, "strategy.zero_stage=0").comm_buckets == 0
