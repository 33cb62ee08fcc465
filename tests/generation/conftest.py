"""The generation and evaluation tests' shared fixtures: a tiny model folder and a file of prompts of every kind."""

from itertools import islice
from pathlib import Path

import pytest
from composed import compose_job

SAMPLES = Path(__file__).resolve().parents[2] / "belle" / "data" / "samples"


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A tiny LLaMA with seeded random fp32 weights, saved with the tiny tokenizer: a model folder to answer with."""
    import torch

    from belle.model.load import build_model
    from belle.model.tokenizer import tiny_tokenizer

    model = compose_job().model
    folder = tmp_path_factory.mktemp("tiny-model")
    build_model(model, "sdpa", dtype=torch.float32, seed=3).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def prompts_file(tmp_path_factory):
    """Eleven prompts of the three kinds: {"text"} records, instruction records and conversations (with ids)."""
    lines = []
    for name, n in (("prompts.jsonl", 5), ("instruction.jsonl", 3), ("conversations.jsonl", 3)):
        with open(SAMPLES / name, encoding="utf-8") as f:
            lines += list(islice(f, n))
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    return path


