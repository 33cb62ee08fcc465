"""Recipes trained for real: DeepSpeed on 2 CPU worker processes of one gloo world (tests/distributed.py), the tiny
model and the bundled pairs, the data prepared first as the launcher does; no Ray (the launcher's own tests cover
it)."""

import pytest


@pytest.fixture
def train_recipe(job, tmp_path, workers_env):
    """``train_recipe(*overrides, name=…)`` composes the job (W&B off), prepares its data, trains it with its recipe
    on 2 workers and returns (job, run dir)."""
    from distributed import spawn

    from belle.data.prepare import prepare
    from belle.model.load import load_tokenizer
    from belle.recipes import recipe

    def _train(*overrides: str, name: str = "run"):
        composed = job(*overrides, "monitor=off", "train.save_every=1000")
        prepare(composed.data, load_tokenizer(composed.model), processes=1)
        run_dir = tmp_path / name
        run_dir.mkdir()
        spawn(recipe(composed.method.name).train, composed, str(run_dir), world=2)
        return composed, run_dir

    return _train

