"""The training method and its own settings (LoRA for now; DPO/RM/PPO settings join here)."""

from dataclasses import dataclass, field

from belle.config._checks import one_of, positive, require

DATA_FORMATS = {"sft": "sft", "pretrain": "pretrain"}
"""The data format (data.format) each method trains on; belle.recipes.RECIPES has a recipe for each method."""
METHODS = tuple(DATA_FORMATS)


@dataclass
class LoraConfig:
    r: int = 8
    """Rank of the update matrices."""
    alpha: int = 16
    """Scaling numerator (scale = alpha / r)."""
    dropout: float = 0.05
    """Dropout on the LoRA input."""
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "down_proj", "gate_proj", "up_proj"]
    )
    """Names of the linear modules that get adapters (BELLE's choice: no o_proj)."""
    modules_to_save: list[str] = field(default_factory=list)
    """Modules trained in full alongside the adapters, e.g. embed_tokens and lm_head after a vocabulary extension."""
    export_merged: bool = False
    """At the end, also write the base model with the adapters merged in (export/merged)."""

    def __post_init__(self) -> None:
        positive("method.lora.r", self.r, 8)
        positive("method.lora.alpha", self.alpha, 16)
        require(
            0 <= self.dropout < 1, f"method.lora.dropout={self.dropout} must be in [0, 1): set method.lora.dropout=0.05"
        )
        require(bool(self.target_modules), "method.lora.target_modules is empty: list the linear modules to adapt")


@dataclass
class MethodConfig:
    name: str = "sft"
    """sft (instruction tuning) or pretrain (continued pretraining on raw text)."""
    lora: LoraConfig | None = None
    """LoRA adapters; None trains every parameter."""

    def __post_init__(self) -> None:
        one_of("method.name", self.name, METHODS)
