"""bench/gpu_smoke.py runs its stages on CPU (tiny shapes, gloo, the reference varlen kernel): the script a GPU
machine runs is checked here before device time is spent on it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_smoke_stages_run_on_cpu(tmp_path, workers_env):
    out = tmp_path / "smoke.json"
    # one recipe stage, the compiled one: the others differ only in their overrides (ZeRO-2 without strategy.compile;
    # ZeRO-3 + LoRA with trained embeddings, which the demo launch trains on CPU)
    only = "env,gpu_tests,recipe_zero2_compiled,attention"
    done = subprocess.run([sys.executable, "bench/gpu_smoke.py", "--cpu", "--only", only, "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    stages = json.loads(out.read_text())["stages"]
    assert done.returncode == 0, {name: stage.get("error") for name, stage in stages.items()}
    assert list(stages) == only.split(",")
    recipe = stages["recipe_zero2_compiled"]
    assert recipe["losses"][-1] < recipe["losses"][0] and recipe["export"]
    variants = stages["attention"]["variants"]
    mixed = variants.pop("reference: no boundaries")["logits_max_diff_vs_alone"]
    for name, variant in variants.items():  # every path keeps packed samples apart
        assert variant["logits_max_diff_vs_alone"] < mixed / 10, name
