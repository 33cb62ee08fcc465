"""Every training experiment's method and strategy train on the tiny model (``+smoke=tiny``): 2 spawned gloo workers,
no Ray, and the export a launch would leave. The launcher's own launches run lora_2m and ppo_7b this way end to end
(tests/launcher/test_training.py), ppo_math_rule through its fault tests (tests/launcher/test_ppo_faults.py)."""

import math

import pytest

from belle.monitor.metrics import read_metrics

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("experiment", ["ft_2m", "pretrain_7b", "ft_2m_lora_math", "rm_7b", "dpo_7b"])
def test_the_experiment_trains_on_the_tiny_model_and_exports(train_recipe, experiment):
    job, run_dir = train_recipe(f"+exp={experiment}", "+smoke=tiny", "train.max_steps=2", "monitor.log_every=1",
                                name=experiment)
    lines = read_metrics(run_dir)
    assert [line["step"] for line in lines] == [1, 2]
    assert all(math.isfinite(line["loss"]) for line in lines)
    export = run_dir / "export"
    merged = job.method.name == "rm" or job.method.lora is None or job.method.lora.export_merged
    assert (export / "model.safetensors").is_file() if merged else (export / "adapter").is_dir(), sorted(
        p.name for p in export.iterdir()
    )
