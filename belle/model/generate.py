"""Answering prompts with a causal LM, shared by PPO's rollouts and the generate and eval jobs: prompts left-padded to
the longest, one response per prompt, greedy at temperature 0 or sampled with the RNG reseeded from (seed, step,
rank) so that a step run again samples the same tokens. Works on a plain module or a DeepSpeed engine's module
(ZeRO-3: belle.strategy.engine.generating gives the module and ``synced_gpus``)."""

from __future__ import annotations

from contextlib import contextmanager

import torch


def step_seed(*parts: int) -> int:
    """A seed from integers (seed, step, rank…): the same parts give the same seed in any process."""
    seed = 0
    for part in parts:
        seed = (seed * 1_000_003 + part) % (2**63 - 1)
    return seed


class Sampler:
    """How one rank answers: greedy at ``temperature`` 0, else sampled at ``temperature`` with nucleus ``top_p`` (no
    top-k), up to ``max_new_tokens``, with the tokenizer's pad and EOS; reseeded per call from (``seed``, step,
    ``rank``)."""

    def __init__(self, tokenizer, *, temperature: float, top_p: float, max_new_tokens: int, seed: int, rank: int):
        from transformers import GenerationConfig

        from belle.data.template import pad_id

        self.tokenizer, self.seed, self.rank = tokenizer, seed, rank
        self.pad, self.eos = pad_id(tokenizer), tokenizer.eos_token_id
        sampling = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) if temperature else dict(
            do_sample=False, temperature=None, top_p=None, top_k=None)
        self.config = GenerationConfig(
            **sampling, max_new_tokens=max_new_tokens, pad_token_id=self.pad, eos_token_id=self.eos,
        )

    @torch.no_grad()
    def sample(self, module, prompts: list[list[int]], step: int, device, synced_gpus: bool = False) -> list[list[int]]:
        """One response per prompt by ``module`` (token ids, as generated: up to max_new_tokens, pad after an EOS).
        The RNG is reseeded from (seed, step, rank), so a resumed step samples the same tokens. ``synced_gpus``
        (ZeRO-3 with partitioned weights): every rank keeps taking part in forward passes until all are done."""
        torch.manual_seed(step_seed(self.seed, step, self.rank))
        batch = left_pad(prompts, self.pad)
        with _generating(module):
            out = module.generate(**{k: v.to(device) for k, v in batch.items()}, generation_config=self.config,
                                  synced_gpus=synced_gpus)
        return out[:, batch["input_ids"].shape[1]:].tolist()


def finished(response: list[int], eos: int) -> tuple[list[int], str]:
    """A generated response up to its EOS (excluded) and why it ended: "eos", or "length" (max_new_tokens)."""
    if eos in response:
        return response[:response.index(eos)], "eos"
    return response, "length"


def left_pad(prompts: list[list[int]], pad: int) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` of prompts left-padded to the longest."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt):] = 1
    return {"input_ids": ids, "attention_mask": mask}


@contextmanager
def _generating(module):
    """Eval mode around ``generate`` only: under activation checkpointing HF drops the KV cache in training mode."""
    was_training = module.training
    module.train(False)
    try:
        yield
    finally:
        module.train(was_training)
