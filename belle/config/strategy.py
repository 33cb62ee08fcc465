"""How training is distributed: DeepSpeed ZeRO stage, offload, precision and batch sizes."""

from dataclasses import dataclass

from belle.config._checks import one_of, positive, require
from belle.config.paths import path_field

PRECISIONS = ("bf16", "fp16", "fp32")


@dataclass
class StrategyConfig:
    zero_stage: int = 3
    """DeepSpeed ZeRO stage: 0 (plain data parallel), 1, 2 or 3."""
    offload_optimizer: bool = False
    """Keep optimizer states in CPU memory (ZeRO 1-3)."""
    offload_params: bool = False
    """Keep parameters in CPU memory (ZeRO 3 only)."""
    precision: str = "bf16"
    """Training precision: bf16, fp16 (dynamic loss scaling) or fp32."""
    micro_batch: int = 1
    """Sequences per device per forward pass."""
    global_batch: int = 32
    """Sequences per optimizer step over all devices; gradient accumulation = global / (micro x world)."""
    grad_clip: float = 1.0
    """Gradient norm clipping; 0 disables it."""
    activation_checkpointing: bool = True
    """Recompute activations in the backward pass to save memory."""
    compile: bool = False
    """torch.compile each transformer block (GPU; fuses norms, RoPE and the MLP's activation around the attention
    kernel: 1.5x tokens/s on a 1.1B LLaMA on one H200, bench/README.md). ZeRO 0-2 only."""
    deepspeed_json: str | None = path_field(None)
    """Expert escape hatch: a raw DeepSpeed JSON merged on top of the generated config (conflicts are errors)."""

    def __post_init__(self) -> None:
        one_of("strategy.zero_stage", self.zero_stage, (0, 1, 2, 3))
        one_of("strategy.precision", self.precision, PRECISIONS)
        positive("strategy.micro_batch", self.micro_batch, 1)
        positive("strategy.global_batch", self.global_batch, 32)
        require(self.grad_clip >= 0, f"strategy.grad_clip={self.grad_clip} must be >= 0: set strategy.grad_clip=1.0")
        require(
            not self.offload_params or self.zero_stage == 3,
            f"strategy.offload_params=true needs ZeRO-3 (strategy.zero_stage={self.zero_stage}): "
            "set strategy.zero_stage=3 or strategy.offload_params=false",
        )
        require(
            not (self.compile and self.zero_stage == 3),
            "strategy.compile=true does not work with ZeRO-3 (its parameter gathering hooks run inside every "
            "block): set strategy.zero_stage=2 or strategy.compile=false",
        )
        require(
            not self.offload_optimizer or self.zero_stage > 0,
            "strategy.offload_optimizer=true needs ZeRO 1-3: set strategy.zero_stage=2 or 3",
        )
