"""Bytes a model's activations, logits and KV cache take for a number of tokens, from architecture numbers alone.

Memory-efficient attention (no s x s scores kept), LLaMA-style blocks: the accounting the training estimate
(belle.strategy.estimate) and PPO's placement (belle.rlhf.planner) share. Good to ~10-20%.
"""

from belle.config import ModelConfig


def block_activation_bytes(model: ModelConfig, tokens: int) -> int:
    """One transformer block's working set over ``tokens`` tokens: the peak of a forward pass without backward."""
    return tokens * (16 * model.hidden_size + 8 * model.intermediate_size)


def activation_bytes(model: ModelConfig, tokens: int, checkpointing: bool) -> int:
    """Activations a training micro-step keeps over ``tokens`` tokens: with checkpointing every block's 16-bit input
    plus one block's working set (recomputed), without it every block's working set."""
    block = block_activation_bytes(model, tokens)
    if checkpointing:
        return model.num_layers * tokens * model.hidden_size * 2 + block
    return model.num_layers * block


def logit_bytes(model: ModelConfig, tokens: int, backward: bool) -> int:
    """Vocabulary logits over ``tokens`` tokens: in training 16-bit logits, their fp32 upcast and its gradient
    (10 bytes each); in a forward pass for log-probs, the fp32 upcast (4)."""
    return tokens * model.vocab_size * (10 if backward else 4)


def kv_cache_bytes(model: ModelConfig, sequences: int, tokens: int, weight_bytes: int) -> int:
    """Keys and values of every layer for ``sequences`` sequences of ``tokens`` tokens (generation)."""
    kv_width = model.kv_heads * (model.hidden_size // model.num_heads)
    return 2 * model.num_layers * sequences * tokens * kv_width * weight_bytes
