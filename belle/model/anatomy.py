"""What a model is made of, counted on the meta device: no weights are loaded or allocated."""

from dataclasses import astuple, dataclass

from belle.config import LoraConfig, ModelConfig


@dataclass(frozen=True)
class Anatomy:
    total_params: int
    """Every parameter of the base model."""
    matmul_params: int
    """Parameters that multiply every token: all but an untied input embedding (a lookup), for FLOP counts."""
    linear_modules: dict[str, tuple[int, int, int]]
    """Leaf name of each nn.Linear kind → (count, in_features, out_features), e.g. q_proj → (32, 4096, 4096)."""
    module_params: dict[str, int]
    """Leaf name of each module kind → parameters in all modules of that name (for modules_to_save)."""
    largest_layer_params: int
    """Parameters of the largest single piece ZeRO-3 gathers at once: a transformer block or the embedding."""


_CACHE: dict[tuple, Anatomy] = {}


def anatomy(model: ModelConfig) -> Anatomy:
    """Parameter counts and module names of ``model``'s architecture (cached per set of numbers)."""
    key = astuple(model)
    if key not in _CACHE:
        _CACHE[key] = _count(model)
    return _CACHE[key]


def _count(model: ModelConfig) -> Anatomy:
    import torch
    from transformers import AutoModelForCausalLM

    from belle.model.architecture import hf_config

    with torch.device("meta"):
        net = AutoModelForCausalLM.from_config(hf_config(model))
    linear: dict[str, tuple[int, int, int]] = {}
    params: dict[str, int] = {}
    for name, module in net.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        params[leaf] = params.get(leaf, 0) + sum(p.numel() for p in module.parameters())
        if isinstance(module, torch.nn.Linear):
            count = linear.get(leaf, (0, 0, 0))[0]
            linear[leaf] = (count + 1, module.in_features, module.out_features)
    stack = next(m for m in net.modules() if isinstance(m, torch.nn.ModuleList))
    block = max(sum(p.numel() for p in b.parameters()) for b in stack)
    total = sum(p.numel() for p in net.parameters())
    embedding = net.get_input_embeddings().weight
    tied = embedding is net.get_output_embeddings().weight
    return Anatomy(
        total_params=total,
        matmul_params=total if tied else total - embedding.numel(),
        linear_modules=linear,
        module_params=params,
        largest_layer_params=max(block, net.get_input_embeddings().weight.numel()),
    )


def lora_params(parts: Anatomy, lora: LoraConfig, model_name: str) -> int:
    """Trainable parameters LoRA adds (r × (in + out) per adapted linear) plus full copies of modules_to_save."""
    linear = {name: shape for name, shape in parts.linear_modules.items() if name != "lm_head"}
    missing = [t for t in lora.target_modules if t not in linear]
    if missing:
        raise ValueError(
            f"method.lora.target_modules has {', '.join(missing)}, which {model_name} does not have; its linear "
            f"modules are {', '.join(sorted(linear))}: set method.lora.target_modules=[…] from those"
        )
    unknown = [m for m in lora.modules_to_save if m not in parts.module_params]
    if unknown:
        raise ValueError(
            f"method.lora.modules_to_save has {', '.join(unknown)}, which {model_name} does not have: "
            "use module names such as embed_tokens or lm_head"
        )
    adapters = sum(n * lora.r * (i + o) for t in lora.target_modules for n, i, o in [linear[t]])
    return adapters + sum(parts.module_params[m] for m in lora.modules_to_save)


def trainable_params(parts: Anatomy, lora: LoraConfig | None, model_name: str) -> int:
    """Parameters a run trains: its LoRA adapters' (lora_params), or every one of the model's without LoRA."""
    return lora_params(parts, lora, model_name) if lora else parts.total_params
