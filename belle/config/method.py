"""The training method and its own settings: LoRA, and the block of the RLHF method it names (rm, dpo, ppo)."""

import math
from dataclasses import dataclass, field

from belle.config._checks import one_of, positive, require
from belle.config.generate import GenerateConfig
from belle.config.ppo import PpoConfig

DATA_FORMATS = {
    "sft": ("sft",), "pretrain": ("pretrain",), "rm": ("preference",), "dpo": ("dpo",), "ppo": ("prompt",),
    "generate": ("prompt", "sft"), "eval": ("eval",),
}
"""The data formats (data.format) each method reads, its usual one first (generate answers prompt records, or the
instruction/conversation records of sft data); belle.recipes.RECIPES has a recipe for each method."""
EVALUATED_AFTER = ("sft", "pretrain", "dpo", "ppo")
"""Methods whose export (a causal LM) a job's ``eval`` section evaluates once training completes."""
SCORED_WHILE_TRAINING = ("sft", "pretrain", "dpo")
"""Methods whose shared step loop (belle.recipes.common) answers and scores the eval section's set every
train.eval_generate_every steps."""
BLOCKS = {"rm": ("rm",), "dpo": ("dpo",), "ppo": ("ppo",), "generate": ("generate", "eval")}
"""Each settings block (method.<block>) → the methods that read it: it is set exactly when method.name is one."""
METHODS = tuple(DATA_FORMATS)
DPO_LOSSES = ("sigmoid", "ipo")
DPO_REFERENCES = ("auto", "adapters_off", "precomputed", "engine")


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
class RmConfig:
    margin: float = 0.0
    """Loss -logsigmoid(r_chosen - r_rejected - margin): the score gap the model is pushed beyond."""
    center_coef: float = 0.0
    """Weight of (r_chosen + r_rejected)^2 in the loss, keeping scores centred on 0 (0 turns it off)."""

    def __post_init__(self) -> None:
        require(math.isfinite(self.margin),
                f"method.rm.margin={self.margin} must be a finite number (the loss would be non-finite from step 1): "
                "set method.rm.margin=0")
        require(
            math.isfinite(self.center_coef) and self.center_coef >= 0,
            f"method.rm.center_coef={self.center_coef} must be a finite number >= 0: set method.rm.center_coef=0",
        )


@dataclass
class DpoConfig:
    beta: float = 0.1
    """Strength of the implicit KL to the reference (BELLE and TRL: 0.1)."""
    loss: str = "sigmoid"
    """sigmoid (DPO) or ipo."""
    label_smoothing: float = 0.0
    """Share of pairs assumed mislabelled (conservative DPO), in [0, 0.5); sigmoid loss only."""
    reference: str = "auto"
    """Where the reference log-probs come from: adapters_off (the policy with its LoRA adapters off), precomputed
    (the initial policy's, computed before step 1 and kept in the checkpoints) or auto (adapters_off under LoRA,
    else precomputed); engine (a second frozen model) is not implemented."""
    max_prompt_length: int = 128
    """Prompt tokens kept (cut from the left); the response is cut from the right to data.max_length."""

    def __post_init__(self) -> None:
        positive("method.dpo.beta", self.beta, 0.1)
        one_of("method.dpo.loss", self.loss, DPO_LOSSES)
        require(
            0 <= self.label_smoothing < 0.5,
            f"method.dpo.label_smoothing={self.label_smoothing} must be in [0, 0.5): set method.dpo.label_smoothing=0",
        )
        require(
            self.loss == "sigmoid" or self.label_smoothing == 0,
            "method.dpo.loss=ipo takes no label smoothing: set method.dpo.label_smoothing=0 or method.dpo.loss=sigmoid",
        )
        one_of("method.dpo.reference", self.reference, DPO_REFERENCES)
        require(
            self.reference != "engine",
            "method.dpo.reference=engine (a second frozen model) is not implemented: set method.dpo.reference=auto "
            "(the initial policy's log-probs, computed once before step 1, or the policy with its adapters off)",
        )
        positive("method.dpo.max_prompt_length", self.max_prompt_length, 128)


@dataclass
class MethodConfig:
    name: str = "sft"
    """sft (instruction tuning), pretrain (continued pretraining on raw text), rm (reward model on preference pairs),
    dpo (direct preference optimisation), ppo (RLHF with actor, critic, reference and reward roles) or generate
    (answer every prompt with model.path, nothing trained) or eval (answer an eval set, then score the answers)."""
    lora: LoraConfig | None = None
    """LoRA adapters; None trains every parameter."""
    rm: RmConfig | None = None
    """The reward model's loss (method.name=rm only)."""
    dpo: DpoConfig | None = None
    """DPO's settings (method.name=dpo only)."""
    ppo: PpoConfig | None = None
    """PPO's settings (method.name=ppo only); its roles' placement is the ``roles`` group."""
    generate: GenerateConfig | None = None
    """How prompts are answered (method.name=generate or eval)."""

    @property
    def dpo_reference(self) -> str:
        """The DPO reference actually used: auto resolved by whether the policy has LoRA adapters."""
        if self.dpo.reference != "auto":
            return self.dpo.reference
        return "adapters_off" if self.lora is not None else "precomputed"

    def __post_init__(self) -> None:
        one_of("method.name", self.name, METHODS)
        for block, readers in BLOCKS.items():
            if self.name in readers:
                require(
                    getattr(self, block) is not None,
                    f"method.name={self.name} needs its method.{block} block: set method={self.name}",
                )
            else:
                require(
                    getattr(self, block) is None,
                    f"method.{block} is set but method.name={self.name}: set method={readers[0]} (or "
                    f"method.{block}=null)",
                )
        require(
            not (self.dpo is not None and self.dpo.reference == "adapters_off" and self.lora is None),
            "method.dpo.reference=adapters_off needs LoRA adapters (method.lora): set method.dpo.reference=precomputed "
            "or method=dpo_lora",
        )
        require(
            not (self.generate is not None and self.lora is not None),
            f"method.name={self.name} trains nothing, so method.lora is unread: point model.path at a LoRA adapter "
            f"(a run's export/adapter) to answer with it, and set method={self.name}",
        )
