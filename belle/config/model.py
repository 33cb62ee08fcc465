"""Model architecture and loading: the real architecture numbers, so plans work without weights."""

from dataclasses import dataclass

from omegaconf import MISSING

from belle.config._checks import one_of, positive, require
from belle.config.paths import path_field

ARCHS = ("llama", "bloom", "qwen2")
ATTENTION = ("auto", "flash_attention_2", "torch_varlen", "sdpa", "eager")


@dataclass
class ModelConfig:
    name: str = MISSING
    """Short name shown in plans and run names, e.g. ``llama_7b``."""
    arch: str = "llama"
    """Architecture family: llama, bloom or qwen2."""
    path: str | None = path_field(None)
    """Local folder with config.json and weights (a Hugging Face model folder)."""
    random_init: bool = False
    """Build the model from the numbers below with random weights when ``path`` is None (tiny models, tests)."""
    tokenizer_path: str | None = path_field(None)
    """Local tokenizer folder; None uses ``path``, or the locally trained tiny tokenizer when ``path`` is None."""
    vocab_size: int = MISSING
    """Rows of the embedding matrix."""
    hidden_size: int = MISSING
    """Width of the residual stream."""
    intermediate_size: int = MISSING
    """Width of the MLP."""
    num_layers: int = MISSING
    """Transformer blocks."""
    num_heads: int = MISSING
    """Attention heads."""
    num_kv_heads: int | None = None
    """Key/value heads (grouped-query attention); None means ``num_heads``."""
    max_position_embeddings: int = 2048
    """Longest sequence the position encoding supports."""
    tie_word_embeddings: bool = False
    """Share the input embedding with the output projection."""
    rope_theta: float = 10000.0
    """RoPE base (llama, qwen2)."""
    attn_implementation: str = "auto"
    """auto (GPU: flash_attention_2 when flash-attn is installed, else torch_varlen; CPU: sdpa), flash_attention_2,
    torch_varlen (PyTorch's own FlashAttention varlen kernel, CUDA, torch >= 2.10), sdpa or eager."""

    def __post_init__(self) -> None:
        one_of("model.arch", self.arch, ARCHS)
        one_of("model.attn_implementation", self.attn_implementation, ATTENTION)
        for key in ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads"):
            positive(f"model.{key}", getattr(self, key), "<a positive integer>")
        require(
            self.hidden_size % self.num_heads == 0,
            f"model.hidden_size={self.hidden_size} is not divisible by model.num_heads={self.num_heads}: "
            "fix one of them",
        )
        kv = self.kv_heads
        require(
            kv > 0 and self.num_heads % kv == 0,
            f"model.num_kv_heads={kv} must divide model.num_heads={self.num_heads}: set model.num_kv_heads",
        )

    @property
    def kv_heads(self) -> int:
        """Key/value heads with the None default resolved."""
        return self.num_kv_heads or self.num_heads
