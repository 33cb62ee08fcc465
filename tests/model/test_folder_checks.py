"""A model folder's weight files are checked from their headers before anything starts: a truncated safetensors
file or a shard its index names but the folder lacks is refused in one line naming the file and the fix."""

import json

import pytest

from belle.model.architecture import check_model_path, safetensors_size


def _model_folder(job, folder, tensors: dict):
    """A llama folder matching the job's tiny model with ``tensors`` written by safetensors; the job's model."""
    from safetensors.torch import save_file

    model = job(f"model.path={folder}").model
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": model.hidden_size}))
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return model


def _tensors():
    import torch

    return {"a": torch.ones(64, 32), "b": torch.zeros(7, dtype=torch.int8)}


def test_the_expected_size_is_read_from_the_header(tmp_path):
    from safetensors.torch import save_file

    save_file(_tensors(), str(tmp_path / "w.safetensors"))
    assert safetensors_size(tmp_path / "w.safetensors") == (tmp_path / "w.safetensors").stat().st_size
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 4)
    assert safetensors_size(tmp_path / "junk.safetensors") is None


def test_a_whole_safetensors_folder_passes(job, tmp_path):
    check_model_path(_model_folder(job, tmp_path / "m", _tensors()))


@pytest.mark.parametrize("cut", [1, 64 * 32 * 4])  # the last byte, or a whole tensor's data
def test_a_truncated_safetensors_file_is_named_with_its_sizes(job, tmp_path, cut):
    model = _model_folder(job, tmp_path / "m", _tensors())
    weights = tmp_path / "m" / "model.safetensors"
    whole = weights.stat().st_size
    with open(weights, "r+b") as f:
        f.truncate(whole - cut)
    with pytest.raises(ValueError) as refused:
        check_model_path(model)
    assert str(refused.value) == (
        f"{weights} is {whole - cut} bytes, not {whole} bytes as its header says (truncated or still copying): "
        f"copy the model's weight files into model.path={tmp_path / 'm'} again"
    )


def test_a_file_cut_inside_its_header_is_not_a_safetensors_file(job, tmp_path):
    model = _model_folder(job, tmp_path / "m", _tensors())
    weights = tmp_path / "m" / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(20)
    with pytest.raises(ValueError, match=r"model.safetensors is 20 bytes, not a safetensors file \(truncated"):
        check_model_path(model)


def test_a_shard_the_index_names_must_be_there(job, tmp_path):
    from safetensors.torch import save_file

    model = _model_folder(job, tmp_path / "m", _tensors())
    (tmp_path / "m" / "model.safetensors").rename(tmp_path / "m" / "model-00001-of-00002.safetensors")
    save_file({"c": _tensors()["a"]}, str(tmp_path / "m" / "model-00002-of-00002.safetensors"))
    index = {"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002"
                                            ".safetensors", "c": "model-00002-of-00002.safetensors"}}
    (tmp_path / "m" / "model.safetensors.index.json").write_text(json.dumps(index))
    check_model_path(model)
    (tmp_path / "m" / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(ValueError) as refused:
        check_model_path(model)
    assert str(refused.value).startswith(
        "model.safetensors.index.json names 1 missing shard(s) (model-00002-of-00002.safetensors): copy the model's"
    )


def test_a_truncated_reward_model_is_refused_before_the_launch(cfg, job, tmp_path, monkeypatch):
    """The PPO reward model's folder goes through the same check, in the launch's validation: nothing written."""
    from safetensors.torch import save_file

    import launcher.app
    from launcher.errors import explain

    policy = job("+exp=ppo_7b", "+smoke=tiny").model
    folder = tmp_path / "rm"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "llama", "architectures": ["LlamaForSequenceClassification"], "vocab_size": policy.vocab_size,
        "hidden_size": policy.hidden_size, "num_hidden_layers": policy.num_layers}))
    save_file(_tensors(), str(folder / "model.safetensors"))
    weights = folder / "model.safetensors"
    whole = weights.stat().st_size
    with open(weights, "r+b") as f:
        f.truncate(whole // 2)
    run_dir = tmp_path / "run"
    monkeypatch.setattr(launcher.app, "_start", lambda *_: pytest.fail("the launch started"))
    with pytest.raises(ValueError) as refused:
        launcher.app.run(cfg("+exp=ppo_7b", "+smoke=tiny", f"method.ppo.reward_model={folder}",
                             f"launcher.run_dir={run_dir}", "monitor.wandb_mode=offline"))
    assert explain(refused.value) == (
        f"{weights} is {whole // 2} bytes, not {whole} bytes as its header says (truncated or still copying): "
        f"copy the model's weight files into method.ppo.reward_model={folder} again"
    )
    assert not run_dir.exists()
