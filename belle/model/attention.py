"""Which attention kernel the model uses: flash-attention 2 where it can run, sdpa otherwise, never silently."""

import importlib.util


def flash_attn_installed() -> bool:
    """Whether the flash-attn package is importable here."""
    return importlib.util.find_spec("flash_attn") is not None


def resolve_attention(requested: str, on_gpu: bool) -> str:
    """The transformers ``attn_implementation`` for ``requested`` on GPU or CPU workers of this environment."""
    flash = flash_attn_installed()
    if requested == "auto":
        return "flash_attention_2" if flash and on_gpu else "sdpa"
    if requested == "flash_attention_2" and not (flash and on_gpu):
        reasons = [r for r, bad in (("the flash-attn package is not installed", not flash),
                                    ("the workers have no CUDA GPU", not on_gpu)) if bad]
        raise ValueError(
            f"model.attn_implementation=flash_attention_2 cannot run: {' and '.join(reasons)}: install the gpu "
            "extra on GPU workers (pip install 'belle-launcher[gpu]') or set model.attn_implementation=sdpa"
        )
    return requested
