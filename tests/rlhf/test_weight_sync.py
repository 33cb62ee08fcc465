"""The weights a rollout pool of its own receives (belle.rlhf.weight_sync), on the tiny model in this process: a LoRA
policy streams exactly PEFT's merged model (trained modules_to_save copies included), buckets hold whole tensors in
order, and a gloo sync group carries them into a plain model whose digest then equals the sender's; a model of
another layout is refused when the group opens."""

import socket
import threading

import pytest
import torch

from belle.config import LoraConfig
from belle.rlhf.weight_sync import SyncGroup, WeightStream


@pytest.fixture
def tiny(job):
    """``tiny(seed)`` → a fresh tiny_llama causal LM in bf16."""
    from belle.model.load import build_model

    model = job().model
    return lambda seed=0: build_model(model, "sdpa", dtype=torch.bfloat16, seed=seed)


def _lora(model):
    """``model`` with LoRA adapters (and a trained copy of lm_head) moved away from their initial values."""
    from belle.model.lora import apply_lora

    peft = apply_lora(model, LoraConfig(r=4, alpha=8, dropout=0.0, modules_to_save=["lm_head"]))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in peft.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                param.add_(torch.randn_like(param) * 0.05)
    return peft


def test_a_lora_policy_streams_peft_s_merged_model(tiny):
    import copy

    peft = _lora(tiny())
    stream = WeightStream(peft)
    merged = copy.deepcopy(peft).merge_and_unload()
    expected = dict(merged.named_parameters())
    assert [t.name for t in stream.tensors] == list(expected)
    for tensor in stream.tensors:
        assert tensor.shape == expected[tensor.name].shape
        torch.testing.assert_close(tensor.value(), expected[tensor.name], rtol=0, atol=0)
    assert sum(t.lora is not None for t in stream.tensors) > 0


def test_buckets_hold_whole_tensors_in_order(tiny):
    stream = WeightStream(tiny())
    limit = 2**20
    buckets = stream.buckets(1)
    assert [t for bucket in buckets for t in bucket] == stream.tensors
    assert len(buckets) >= 3
    for bucket in buckets:
        assert sum(t.nbytes for t in bucket) <= limit or len(bucket) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _in_threads(*targets) -> list:
    """Run each target in its own thread at once → their results (or raised exceptions), in order."""
    results = [None] * len(targets)

    def run(i, target):
        try:
            results[i] = target()
        except Exception as error:  # the test inspects it
            results[i] = error

    threads = [threading.Thread(target=run, args=(i, t)) for i, t in enumerate(targets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_a_sync_group_carries_the_merged_weights_into_a_plain_model(tiny):
    sender, receiver = WeightStream(_lora(tiny(0))), WeightStream(tiny(1))
    assert sender.digest() != receiver.digest()
    port = _free_port()
    groups = _in_threads(lambda: SyncGroup("127.0.0.1", port, 0, 2, 60, sender),
                         lambda: SyncGroup("127.0.0.1", port, 1, 2, 60, receiver))

    def send():
        for bucket in sender.buckets(1):
            groups[0].broadcast(sender.pack(bucket, groups[0].device))

    def receive():
        for bucket in receiver.buckets(1):
            data = torch.empty(sum(t.nbytes for t in bucket), dtype=torch.uint8)
            groups[1].broadcast(data)
            receiver.unpack(bucket, data)

    assert _in_threads(send, receive) == [None, None]
    assert receiver.digest() == sender.digest()


def test_a_model_of_another_layout_is_refused_when_the_group_opens(tiny, job):
    from belle.model.load import build_model

    other = job("model.num_layers=1").model
    port = _free_port()
    sent, refused = _in_threads(
        lambda: SyncGroup("127.0.0.1", port, 0, 2, 60, WeightStream(tiny())),
        lambda: SyncGroup("127.0.0.1", port, 1, 2, 60, WeightStream(build_model(other, "sdpa", torch.bfloat16))))
    assert isinstance(sent, SyncGroup)
    assert str(refused) == ("sync rank 1: the actor's weights are named, shaped or typed unlike this rollout's model: "
                            "build both from role_model(job, 'actor') with strategy.precision")
