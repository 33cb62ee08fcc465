"""The torch_varlen attention path: packed rows give what sdpa's block-diagonal mask gives.

On CPU the CUDA kernel is replaced by a reference with its signature (sdpa per sequence), which checks our glue:
registration, the mask, position ids → cumulative lengths, layouts, GQA. The `gpu` tests run the real kernels.
"""

import pytest
import torch
import torch.nn.functional as F

from belle.model.attention import VARLEN, register_torch_varlen, varlen_options


def reference_varlen(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, -1), enable_gqa=False):
    """varlen_attn's contract, one sequence at a time with sdpa."""
    pieces = []
    for start, end in zip(cu_q[:-1].tolist(), cu_q[1:].tolist(), strict=True):
        q_, k_, v_ = (t[start:end].transpose(0, 1) for t in (q, k, v))
        out = F.scaled_dot_product_attention(
            q_, k_, v_, is_causal=window_size == (-1, 0), scale=scale, enable_gqa=enable_gqa
        )
        pieces.append(out.transpose(0, 1))
    return torch.cat(pieces)


def _model(attn: str, device: str = "cpu", dtype=torch.float32):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config).to(device=device, dtype=dtype).eval()


def _packed_batch(device="cpu"):
    """Two rows of 16 tokens, each holding samples of lengths (5, 7, 4) and (9, 7)."""
    torch.manual_seed(1)
    ids = torch.randint(4, 128, (2, 16), device=device)
    positions = torch.tensor([[*range(5), *range(7), *range(4)], [*range(9), *range(7)]], device=device)
    return ids, positions


def _logits(model, ids, positions, attn):
    model.set_attn_implementation(attn)
    with torch.no_grad():
        return model(input_ids=ids, position_ids=positions, attention_mask=None, use_cache=False).logits.float()


def test_varlen_glue_matches_sdpa_on_packed_rows():
    register_torch_varlen(kernel=reference_varlen)
    model = _model("sdpa")
    ids, positions = _packed_batch()
    varlen, sdpa = _logits(model, ids, positions, VARLEN), _logits(model, ids, positions, "sdpa")
    torch.testing.assert_close(varlen, sdpa, atol=1e-5, rtol=1e-5)
    plain = _logits(model, ids, torch.arange(16).expand(2, 16), VARLEN)
    assert not torch.allclose(plain, varlen, atol=1e-3), "boundaries must matter"
    register_torch_varlen()  # restore the real kernel for anyone after us


@pytest.mark.gpu
@pytest.mark.parametrize("attn", ["flash_attention_2", VARLEN])
def test_packed_equals_unpacked_on_gpu(attn):
    """Each packed sample's logits equal the same sample run alone (bf16 kernels, CUDA)."""
    if attn == "flash_attention_2":
        pytest.importorskip("flash_attn")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    register_torch_varlen()
    model = _model("sdpa", "cuda", torch.bfloat16)
    ids, positions = _packed_batch("cuda")
    packed = _logits(model, ids, positions, attn)
    for row in range(2):
        starts = (positions[row] == 0).nonzero().flatten().tolist() + [16]
        for a, b in zip(starts[:-1], starts[1:], strict=True):
            alone = _logits(model, ids[row : row + 1, a:b], positions[row : row + 1, a:b], "sdpa")
            torch.testing.assert_close(packed[row, a:b], alone[0], atol=2e-2, rtol=2e-2)


def _torch_2_10_kernel(q, k, v, cu_q, cu_k, max_q, max_k, *, is_causal=False, return_aux=None, scale=None):
    """varlen_attn as torch 2.10 shipped it: is_causal, no window_size, no enable_gqa (GQA taken as it comes)."""
    return reference_varlen(q, k, v, cu_q, cu_k, max_q, max_k, scale=scale,
                            window_size=(-1, 0) if is_causal else (-1, -1), enable_gqa=k.shape[1] != q.shape[1])


def _torch_2_11_kernel(q, k, v, cu_q, cu_k, max_q, max_k, *, return_aux=None, scale=None, window_size=(-1, -1)):
    """varlen_attn as torch 2.11 shipped it: window_size, no enable_gqa."""
    return reference_varlen(q, k, v, cu_q, cu_k, max_q, max_k, scale=scale, window_size=window_size,
                            enable_gqa=k.shape[1] != q.shape[1])


@pytest.mark.parametrize(
    ("kernel", "options"),
    [
        (_torch_2_10_kernel, {"is_causal": True}),
        (_torch_2_11_kernel, {"window_size": (-1, 0)}),
        (reference_varlen, {"window_size": (-1, 0), "enable_gqa": True}),  # torch 2.13
    ],
    ids=["torch-2.10", "torch-2.11", "torch-2.13"],
)
def test_varlen_arguments_follow_the_installed_signature(kernel, options):
    import inspect

    assert varlen_options(inspect.signature(kernel).parameters, gqa=True) == options
    register_torch_varlen(kernel=kernel)
    model = _model("sdpa")
    ids, positions = _packed_batch()
    torch.testing.assert_close(_logits(model, ids, positions, VARLEN), _logits(model, ids, positions, "sdpa"),
                               atol=1e-5, rtol=1e-5)
    register_torch_varlen()


def test_micro_batch_boundaries_reach_the_kernel_once(monkeypatch):
    """collate's per-micro-batch lengths are what the kernel gets, for every row of a micro-batch > 1; no layer
    derives them again from the position ids (a host sync per layer)."""
    import transformers.modeling_flash_attention_utils as fa_utils

    from belle.data.packing import PackedRow, collate

    ids, positions = _packed_batch()
    rows = [PackedRow(ids[r].tolist(), ids[r].tolist(), positions[r].tolist()) for r in range(2)]
    batch = collate(rows, varlen=True)
    assert batch["cu_seq_lens_q"].tolist() == [0, 5, 12, 16, 25, 32] and batch["max_length_q"] == 9
    seen = []

    def spy(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=(-1, -1), enable_gqa=False):
        seen.append((cu_q.tolist(), max_q))
        return reference_varlen(q, k, v, cu_q, cu_k, max_q, max_k, scale=scale, window_size=window_size,
                                enable_gqa=enable_gqa)

    def no_derivation(*args, **kwargs):
        raise AssertionError("boundaries were derived again inside a layer")

    monkeypatch.setattr(fa_utils, "prepare_fa_kwargs_from_position_ids", no_derivation)
    register_torch_varlen(kernel=spy)
    model = _model("sdpa")
    model.set_attn_implementation(VARLEN)
    labels = batch.pop("labels")
    with torch.no_grad():
        varlen = model(**batch, attention_mask=None, use_cache=False).logits
    register_torch_varlen()
    assert seen == [([0, 5, 12, 16, 25, 32], 9)] * 2  # one call per layer, the collated lengths each time
    torch.testing.assert_close(varlen, _logits(model, ids, positions, "sdpa"), atol=1e-5, rtol=1e-5)
    assert labels.shape == ids.shape
