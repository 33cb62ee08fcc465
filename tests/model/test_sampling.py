"""Sampling without PPO or DeepSpeed: a plain tiny model, prompts left-padded, responses reseeded per step."""

import torch

from belle.model.generate import Sampler, left_pad


def test_prompts_are_left_padded_to_the_longest():
    batch = left_pad([[5, 6, 7], [8]], pad=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]


def test_a_step_samples_the_same_tokens_again_and_training_mode_is_kept(job):
    from belle.model.load import load_tokenizer
    from belle.strategy.engine import inference_model

    tiny = job().model
    model = inference_model(tiny, "fp32", attention="sdpa", seed=1)
    model.train()
    sampler = Sampler(load_tokenizer(tiny), temperature=0.7, top_p=0.9, max_new_tokens=5, seed=1, rank=0)
    prompts = [[5, 6, 7, 8], [9, 10]]
    first = sampler.sample(model, prompts, step=2, device=torch.device("cpu"))
    assert sampler.sample(model, prompts, step=2, device=torch.device("cpu")) == first
    assert len(first) == 2 and all(len(row) <= 5 for row in first)
    assert model.training and not any(p.requires_grad for p in model.parameters())
