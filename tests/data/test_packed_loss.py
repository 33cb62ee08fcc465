"""THE key packing test: a packed batch gives the same loss as its samples run one by one, so packed samples
never see each other; with plain 0..L-1 positions (no restarts) the loss differs, so the test can fail."""

import pytest

from belle.data.dataset import build_sft_samples
from belle.data.packing import collate, pack

MAX_LENGTH = 128


def summed_loss(model, input_ids, labels, position_ids=None):
    """Token-summed cross-entropy (HF's shift: token t predicts label t+1) and the number of trained labels.

    use_cache=False matters: with a cache, transformers does not read packed sequences from position_ids.
    """
    import torch.nn.functional as F

    logits = model(input_ids=input_ids, position_ids=position_ids, use_cache=False).logits.float()
    targets = labels[:, 1:]
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum")
    return loss, int((targets != -100).sum())


@pytest.fixture(scope="module")
def samples_and_rows(tokenizer, sft_spec):
    samples, _ = build_sft_samples(sft_spec.split(",")[1], tokenizer, MAX_LENGTH, limit=16)  # multi-turn convs
    rows = list(pack(samples, MAX_LENGTH, tokenizer.pad_token_id))
    assert any(r.position_ids[: MAX_LENGTH - r.n_pad].count(0) >= 3 for r in rows)  # rows hold several samples
    return samples, rows


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_loss_equals_one_by_one_loss_and_plain_positions_differ(tokenizer, samples_and_rows, attn):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    samples, rows = samples_and_rows
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=MAX_LENGTH,
        initializer_range=0.2,
        pad_token_id=tokenizer.pad_token_id,
        attn_implementation=attn,
    )  # a wide init so attention to other samples would move the loss visibly
    model = LlamaForCausalLM(config).eval()
    assert model.config._attn_implementation == attn
    batch = collate(rows)

    with torch.no_grad():
        one_by_one, n_single = 0.0, 0
        for s in samples:
            loss, n = summed_loss(model, torch.tensor([s.input_ids]), torch.tensor([s.labels]))
            one_by_one, n_single = one_by_one + loss, n_single + n
        packed, n_packed = summed_loss(model, batch["input_ids"], batch["labels"], batch["position_ids"])
        plain_positions = torch.arange(MAX_LENGTH).expand(len(rows), -1)
        unrestarted, _ = summed_loss(model, batch["input_ids"], batch["labels"], plain_positions)

    assert n_packed == n_single == sum(s.n_trained for s in samples)  # every sample opens with a masked prompt
    reference = one_by_one / n_single
    assert (packed / n_packed).item() == pytest.approx(reference.item(), abs=1e-5)
    assert abs((unrestarted / n_packed - reference).item()) > 1e-2
