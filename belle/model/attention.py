"""Which attention kernel the model uses, never chosen silently, and how packed rows reach it.

``auto`` picks, on each worker: flash-attention 2 where the package is installed, else PyTorch's own FlashAttention
varlen kernel (torch >= 2.10), else sdpa. FlashAttention kernels need fp16/bf16 and an Ampere or newer GPU (sm80+):
fp32 jobs and older GPUs get sdpa. BLOOM (ALiBi, no position ids) supports eager attention only.

Both flash paths read packed rows the same way: cumulative sequence lengths computed once per micro-batch from the
restarting position ids (``belle.data.packing.collate``), passed to the model as ``cu_seq_lens_q/k`` and
``max_length_q/k``, so packed samples never attend to each other whatever the micro-batch size.
"""

from __future__ import annotations

import importlib.util
import inspect
from functools import cache, partial

VARLEN = "torch_varlen"
"""The attn_implementation name under which torch.nn.attention.varlen.varlen_attn is registered."""

FLASH_PATHS = ("flash_attention_2", VARLEN)
"""Implementations that take packed rows as cumulative sequence lengths (the varlen kwargs)."""

FLASH_MIN_CAPABILITY = (8, 0)
"""FlashAttention kernels (the flash-attn package and torch's own) run on Ampere (sm80) and newer."""


def flash_attn_installed() -> bool:
    """Whether the flash-attn package is importable here."""
    return importlib.util.find_spec("flash_attn") is not None


def torch_varlen_available() -> bool:
    """Whether this torch ships the FlashAttention varlen kernel (torch >= 2.10)."""
    return importlib.util.find_spec("torch.nn.attention.varlen") is not None


def check_attention(requested: str, arch: str, precision: str, gpu_workers: bool) -> None:
    """Refuse, before anything starts, what no worker of this job could run (whatever it has installed)."""
    if arch == "bloom" and requested not in ("auto", "eager"):
        raise ValueError(
            f"model.attn_implementation={requested} is not supported by BLOOM (ALiBi, no position ids): "
            "set model.attn_implementation=eager (or auto)"
        )
    if requested in FLASH_PATHS and not gpu_workers:
        raise ValueError(
            f"model.attn_implementation={requested} cannot run: the workers have no CUDA GPU: "
            "set model.attn_implementation=sdpa, or cluster.gpus_per_node=<GPUs per node>"
        )
    if requested in FLASH_PATHS and precision == "fp32":
        raise ValueError(
            f"model.attn_implementation={requested} runs fp16/bf16 only: set strategy.precision=bf16 "
            "or model.attn_implementation=sdpa"
        )


def resolve_attention(
    requested: str, arch: str = "llama", precision: str = "bf16", capability: tuple[int, int] | None = None
) -> str:
    """The transformers ``attn_implementation`` for ``requested`` on this worker: ``capability`` is its GPU's
    (major, minor) compute capability, None for CPU workers."""
    on_gpu = capability is not None
    check_attention(requested, arch, precision, on_gpu)
    flash_ok = on_gpu and precision != "fp32" and capability >= FLASH_MIN_CAPABILITY
    if requested == "auto":
        return _auto(arch, flash_ok) or (
            "flash_attention_2" if flash_attn_installed() else VARLEN if torch_varlen_available() else "sdpa"
        )
    if requested in FLASH_PATHS and not flash_ok:
        raise ValueError(
            f"model.attn_implementation={requested} needs an Ampere or newer GPU (sm80+), this one is "
            f"sm{capability[0]}{capability[1]}: set model.attn_implementation=sdpa"
        )
    if requested == "flash_attention_2" and not flash_attn_installed():
        raise ValueError(
            "model.attn_implementation=flash_attention_2 cannot run: the flash-attn package is not installed on "
            "the workers: install it (pip install flash-attn --no-build-isolation, after torch), or set "
            f"model.attn_implementation={VARLEN} (torch >= 2.10) or auto"
        )
    if requested == VARLEN and not torch_varlen_available():
        raise ValueError(
            f"model.attn_implementation={VARLEN} needs torch >= 2.10 on the workers: set "
            "model.attn_implementation=sdpa or auto"
        )
    return requested


def describe_attention(requested: str, arch: str, precision: str, gpu_workers: bool, gpu_sm80: bool) -> str:
    """What the plan says: attention is resolved on each worker, since the submitting host may differ."""
    check_attention(requested, arch, precision, gpu_workers)
    if requested != "auto":
        return requested
    return _auto(arch, gpu_workers and precision != "fp32" and gpu_sm80) or (
        f"auto (on the workers: flash_attention_2 if flash-attn is installed, else {VARLEN}, else sdpa)"
    )


def _auto(arch: str, flash_ok: bool) -> str | None:
    """What ``auto`` picks when the job alone decides it; None: FlashAttention can run, and the worker's packages
    choose which."""
    if arch == "bloom":
        return "eager"
    return None if flash_ok else "sdpa"


def register_torch_varlen(kernel=None) -> None:
    """Make ``attn_implementation="torch_varlen"`` known to transformers (idempotent). ``kernel`` replaces
    varlen_attn (same signature) where CUDA is missing, e.g. a reference implementation in CPU tests."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

    AttentionInterface.register(VARLEN, partial(varlen_attention_forward, kernel=kernel))
    AttentionMaskInterface.register(VARLEN, flash_attention_mask)  # None for packed rows: boundaries come below


def varlen_options(parameters, gqa: bool) -> dict:
    """Keyword arguments for a ``varlen_attn`` with these parameter names: causality is ``window_size=(-1, 0)``
    (torch >= 2.11) or ``is_causal=True`` (2.10); ``enable_gqa`` exists only in newer builds, whose check needs it,
    while older kernels take fewer key/value heads as they are."""
    options = {"window_size": (-1, 0)} if "window_size" in parameters else {"is_causal": True}
    if gqa and "enable_gqa" in parameters:
        options["enable_gqa"] = True
    return options


@cache
def _kernel_parameters(kernel) -> frozenset[str]:
    return frozenset(inspect.signature(kernel).parameters)


def varlen_attention_forward(
    module, query, key, value, attention_mask, scaling: float | None = None, dropout: float = 0.0, kernel=None,
    cu_seq_lens_q=None, cu_seq_lens_k=None, max_length_q: int | None = None, max_length_k: int | None = None,
    **kwargs,
):
    """Causal attention over the packed sequences of each micro-batch, flattened to one (tokens, heads, dim) stream.

    The boundaries come as varlen kwargs (collate computes them once per micro-batch, no host sync here); without
    them they are derived from the position ids (one host sync per layer: fine for tests, slow for training).
    query/key/value come as (batch, heads, seq, head_dim); the result is (batch, seq, heads, head_dim) like every
    transformers attention function.
    """
    import torch

    if attention_mask is not None:
        raise ValueError(f"{VARLEN} takes packed rows without padding masks: pass attention_mask=None")
    if kernel is None:
        from torch.nn.attention.varlen import varlen_attn as kernel
    batch, heads, seq, dim = query.shape
    if cu_seq_lens_q is None:
        from transformers.modeling_flash_attention_utils import prepare_fa_kwargs_from_position_ids

        position_ids = kwargs.get("position_ids")
        if position_ids is None:
            position_ids = torch.arange(seq, device=query.device).expand(batch, seq)
        (cu_seq_lens_q, cu_seq_lens_k), (max_length_q, max_length_k) = prepare_fa_kwargs_from_position_ids(
            position_ids
        )
    flat = [t.transpose(1, 2).reshape(batch * seq, t.shape[1], dim) for t in (query, key, value)]
    options = varlen_options(_kernel_parameters(kernel), gqa=key.shape[1] != heads)
    out = kernel(*flat, cu_seq_lens_q, cu_seq_lens_k, int(max_length_q), int(max_length_k), scale=scaling, **options)
    return out.reshape(batch, seq, heads, dim), None
