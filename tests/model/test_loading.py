"""Model folders are checked against the chosen architecture; attention never falls back silently."""

import json

import pytest

from belle.model.architecture import check_model_path
from belle.model.attention import resolve_attention


def test_folder_of_another_architecture_is_named(job, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 5120, "num_hidden_layers": 40}))
    with pytest.raises(ValueError, match="has hidden_size=5120 but model=llama_7b says hidden_size=4096"):
        check_model_path(job("+exp=lora_2m", f"model.path={tmp_path}").model)


def test_saved_tiny_model_reloads_and_passes_the_check(job, tmp_path):
    from transformers import AutoModelForCausalLM

    from belle.model.load import build_model

    model = job().model
    build_model(model, "sdpa").save_pretrained(tmp_path)
    reloaded = job(f"model.path={tmp_path}").model
    check_model_path(reloaded)
    assert AutoModelForCausalLM.from_pretrained(tmp_path).config.hidden_size == model.hidden_size


def test_auto_attention_is_sdpa_without_flash_attn():
    assert resolve_attention("auto", on_gpu=False) == "sdpa"
    assert resolve_attention("auto", on_gpu=True) in ("flash_attention_2", "torch_varlen")
    assert resolve_attention("eager", on_gpu=False) == "eager"


def test_flash_attention_on_cpu_workers_names_the_reason():
    with pytest.raises(ValueError, match="the workers have no CUDA GPU"):
        resolve_attention("flash_attention_2", on_gpu=False)


@pytest.mark.gpu
def test_auto_attention_uses_flash_attn_when_installed_on_gpu():
    pytest.importorskip("flash_attn")
    assert resolve_attention("auto", on_gpu=True) == "flash_attention_2"
