"""The reward-model recipe on the bundled preference pairs (half of the rejected answers are refusals, half answer
another question): it learns to rank them on held-out pairs, and its export scores as it did in training."""

import json

import pytest

from belle.monitor.metrics import read_metrics

pytestmark = pytest.mark.slow

RM = ("method=rm", "data=sample_preference", "strategy=zero3", "strategy.precision=fp32", "data.max_length=128",
      "strategy.micro_batch=4", "strategy.global_batch=16", "optim.warmup_steps=2", "train.max_steps=null")

MEASURED_HELD_OUT_ACCURACY = 0.83
"""Held-out accuracy of this run when it was written (100 pairs, 2 epochs, 24 steps; chance is 0.5)."""


def _reloaded_stats(job, export) -> dict:
    """Mean and std of the exported model's scores over the held-out pairs, each pair scored alone, unpadded."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from belle.data.cache import open_cache
    from belle.model.load import load_tokenizer

    model = AutoModelForSequenceClassification.from_pretrained(export, dtype=torch.float32).eval()
    eval_pairs, _ = open_cache(job.data, load_tokenizer(job.model))
    with torch.no_grad():
        scores = torch.tensor([model(torch.tensor([list(ids)])).logits.item()
                               for pair in eval_pairs for ids in (pair.chosen, pair.rejected)], dtype=torch.float64)
    return {"mean": scores.mean().item(), "std": scores.std(unbiased=False).item()}


def test_the_reward_model_ranks_held_out_pairs_and_its_export_scores_alike(train_recipe):
    job, run_dir = train_recipe(*RM, "data.eval_samples=100", "optim.lr=1e-3", "train.epochs=2",
                                "monitor.log_every=4", "train.eval_every=12")
    lines = read_metrics(run_dir)
    held_out = [line["eval_accuracy"] for line in lines if "eval_accuracy" in line]
    assert len(held_out) == 2 and held_out[-1] >= 0.7, held_out  # measured 0.83
    assert lines[-1]["accuracy"] > 0.8 and lines[-1]["margin"] > lines[0]["margin"]
    assert all(line["reward_std"] > 0 for line in lines)

    export = run_dir / "export"
    config = json.loads((export / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"] and len(config["id2label"]) == 1
    assert config["pad_token_id"] != config["eos_token_id"]
    stats = json.loads((export / "reward_stats.json").read_text())
    assert (stats["data"], stats["pairs"]) == ("eval", 100)
    assert stats["mean"] == pytest.approx(lines[-1]["eval_reward_mean"], abs=1e-9)
    reloaded = _reloaded_stats(job, export)
    assert reloaded == pytest.approx({key: stats[key] for key in ("mean", "std")}, abs=1e-5)


def test_a_lora_reward_model_exports_with_its_adapters_merged(train_recipe):
    job, run_dir = train_recipe(*RM, "method=rm_lora", "data.eval_samples=16", "optim.lr=1e-2", "train.max_steps=3")
    export = run_dir / "export"
    assert not (export / "adapter").exists() and (export / "model.safetensors").is_file()
    stats = json.loads((export / "reward_stats.json").read_text())
    reloaded = _reloaded_stats(job, export)
    assert reloaded == pytest.approx({key: stats[key] for key in ("mean", "std")}, abs=1e-5)
