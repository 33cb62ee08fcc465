"""Which attention kernel the model uses, never chosen silently: flash-attention 2 where the package and a GPU are
there, else PyTorch's own FlashAttention varlen kernel on GPU (torch >= 2.10), else sdpa.

Both flash paths read packed rows the same way: sequence boundaries from the restarting position ids, so packed
samples never attend to each other.
"""

import importlib.util
from functools import partial

VARLEN = "torch_varlen"
"""The attn_implementation name under which torch.nn.attention.varlen.varlen_attn is registered."""


def flash_attn_installed() -> bool:
    """Whether the flash-attn package is importable here."""
    return importlib.util.find_spec("flash_attn") is not None


def torch_varlen_available() -> bool:
    """Whether this torch ships the FlashAttention varlen kernel (torch >= 2.10)."""
    return importlib.util.find_spec("torch.nn.attention.varlen") is not None


def resolve_attention(requested: str, on_gpu: bool) -> str:
    """The transformers ``attn_implementation`` for ``requested`` on GPU or CPU workers of this environment."""
    flash = flash_attn_installed()
    if requested == "auto":
        if not on_gpu:
            return "sdpa"
        return "flash_attention_2" if flash else VARLEN if torch_varlen_available() else "sdpa"
    if requested == "flash_attention_2" and not (flash and on_gpu):
        reasons = [r for r, bad in (("the flash-attn package is not installed", not flash),
                                    ("the workers have no CUDA GPU", not on_gpu)) if bad]
        raise ValueError(
            f"model.attn_implementation=flash_attention_2 cannot run: {' and '.join(reasons)}: install the gpu "
            f"extra on GPU workers (pip install 'belle-launcher[gpu]'), or set model.attn_implementation={VARLEN} "
            "(GPU, torch >= 2.10) or sdpa"
        )
    if requested == VARLEN and not (on_gpu and torch_varlen_available()):
        raise ValueError(
            f"model.attn_implementation={VARLEN} needs CUDA workers and torch >= 2.10: set "
            "model.attn_implementation=sdpa"
        )
    return requested


def register_torch_varlen(kernel=None) -> None:
    """Make ``attn_implementation="torch_varlen"`` known to transformers (idempotent). ``kernel`` replaces
    varlen_attn (same signature) where CUDA is missing, e.g. a reference implementation in CPU tests."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

    AttentionInterface.register(VARLEN, partial(varlen_attention_forward, kernel=kernel))
    AttentionMaskInterface.register(VARLEN, flash_attention_mask)  # None for packed rows: boundaries come below


def varlen_attention_forward(
    module, query, key, value, attention_mask, scaling: float | None = None, dropout: float = 0.0, kernel=None,
    **kwargs,
):
    """Causal attention over the packed sequences of each row (boundaries where position ids restart).

    query/key/value come as (batch, heads, seq, head_dim); the result is (batch, seq, heads, head_dim) like every
    transformers attention function.
    """
    import torch
    from transformers.modeling_flash_attention_utils import prepare_fa_kwargs_from_position_ids

    if attention_mask is not None:
        raise ValueError(f"{VARLEN} takes packed rows without padding masks: pass attention_mask=None")
    if kernel is None:
        from torch.nn.attention.varlen import varlen_attn as kernel
    batch, heads, seq, dim = query.shape
    position_ids = kwargs.get("position_ids")
    if position_ids is None:
        position_ids = torch.arange(seq, device=query.device).expand(batch, seq)
    (cu_q, cu_k), (max_q, max_k) = prepare_fa_kwargs_from_position_ids(position_ids)
    flat = [t.transpose(1, 2).reshape(batch * seq, t.shape[1], dim) for t in (query, key, value)]
    out = kernel(
        *flat, cu_q, cu_k, int(max_q), int(max_k), scale=scaling, window_size=(-1, 0),
        enable_gqa=key.shape[1] != heads,
    )
    return out.reshape(batch, seq, heads, dim), None
