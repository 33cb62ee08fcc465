"""python -m launcher.tools: export turns a run's checkpoint back into the folders the run exported (bit for bit),
merge_lora merges an adapter into its base; one-line refusals for folders that are neither."""

import pytest
from safetensors.torch import load_file

from launcher.tools import main


def _trained(train_recipe, *overrides):
    """A run trained on 2 spawned workers, with the config.yaml a launch writes."""
    import yaml

    from belle import rundir
    from belle.config import job_dict

    job, run_dir = train_recipe(*overrides)
    (run_dir / rundir.CONFIG).write_text(yaml.safe_dump(job_dict(job), sort_keys=False))
    return run_dir


def _same_weights(a, b) -> None:
    left, right = load_file(a), load_file(b)
    assert left.keys() == right.keys()
    assert all(left[key].dtype == right[key].dtype and left[key].equal(right[key]) for key in left)


@pytest.mark.parametrize("overrides,folders", [
    (("train.max_steps=3", "optim.warmup_steps=0"), ("adapter/adapter_model.safetensors", "base/model.safetensors")),
    (("method=sft", "strategy=zero2", "train.max_steps=2", "optim.warmup_steps=0"), ("model.safetensors",)),
    (("method=rm_lora", "data=sample_preference", "data.pack=false", "train.max_steps=2", "optim.warmup_steps=0"),
     ("model.safetensors",)),
], ids=["lora-zero3", "full-zero2", "reward-model-lora-merged"])
def test_export_rebuilds_the_runs_own_export_from_its_checkpoint(train_recipe, tmp_path, overrides, folders):
    run_dir = _trained(train_recipe, *overrides)
    assert main(["export", str(run_dir), "--out", str(tmp_path / "again")]) == 0
    for name in folders:
        _same_weights(run_dir / "export" / name, tmp_path / "again" / name)


def test_merge_lora_merges_a_runs_adapter_and_refuses_what_is_no_adapter(train_recipe, tmp_path, capsys):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run_dir = _trained(train_recipe, "train.max_steps=3", "optim.warmup_steps=0")
    assert main(["merge_lora", str(run_dir), "--out", str(tmp_path / "merged")]) == 0
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(run_dir / "export" / "base", dtype=torch.float32)
    adapted = PeftModel.from_pretrained(base, run_dir / "export" / "adapter")
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    assert torch.allclose(merged(ids).logits, adapted(ids).logits, atol=2e-2)  # merged in bf16, as exported

    assert main(["merge_lora", str(run_dir / "export" / "base"), "--out", str(tmp_path / "x")]) == 2
    assert "holds a full model, which needs no merge" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "y")]) == 2
    assert "is not a run dir" in capsys.readouterr().err
    assert main(["export", str(run_dir), "--step", "99", "--out", str(tmp_path / "y")]) == 2
    assert "has no checkpoint of step 99: choose one of step-000003" in capsys.readouterr().err
