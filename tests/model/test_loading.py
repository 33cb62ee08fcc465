"""Model folders are checked against the chosen architecture; attention never falls back silently."""

import json

import pytest

from belle.model.architecture import check_model_path
from belle.model.attention import resolve_attention


def test_folder_of_another_architecture_is_named(job, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 5120, "num_hidden_layers": 40}))
    with pytest.raises(ValueError, match="has hidden_size=5120 but model=llama_7b says hidden_size=4096"):
        check_model_path(job("+exp=lora_2m", f"model.path={tmp_path}").model)


def test_folder_of_another_model_type_is_named(job, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bloom", "n_layer": 30}))
    with pytest.raises(ValueError, match="holds a bloom model but model=llama_7b is model.arch=llama"):
        check_model_path(job("+exp=lora_2m", f"model.path={tmp_path}").model)


def test_folder_without_weights_is_refused_before_launch(job, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 4096}))
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ValueError, match="has a config.json but no weights"):
        check_model_path(job("+exp=lora_2m", f"model.path={tmp_path}").model)


@pytest.mark.parametrize("folder", ["missing", "empty"])
def test_tokenizer_folder_without_a_tokenizer_names_the_key(job, tmp_path, folder):
    from belle.model.load import load_tokenizer

    (tmp_path / "empty").mkdir()
    model = job(f"model.tokenizer_path={tmp_path / folder}").model
    message = "is not a folder" if folder == "missing" else "holds no tokenizer"
    with pytest.raises(ValueError, match=f"model.tokenizer_path=.*{folder} {message}"):
        load_tokenizer(model)


def test_saved_tiny_model_reloads_and_passes_the_check(job, tmp_path):
    from transformers import AutoModelForCausalLM

    from belle.model.load import build_model

    model = job().model
    build_model(model, "sdpa").save_pretrained(tmp_path)
    reloaded = job(f"model.path={tmp_path}").model
    check_model_path(reloaded)
    assert AutoModelForCausalLM.from_pretrained(tmp_path).config.hidden_size == model.hidden_size


def test_auto_attention_is_chosen_per_worker():
    assert resolve_attention("auto", capability=None) == "sdpa"  # CPU workers
    assert resolve_attention("auto", capability=(9, 0)) in ("flash_attention_2", "torch_varlen")
    assert resolve_attention("auto", capability=(7, 0)) == "sdpa"  # V100: no FlashAttention kernels
    assert resolve_attention("auto", precision="fp32", capability=(9, 0)) == "sdpa"  # FlashAttention is 16-bit only
    assert resolve_attention("auto", arch="bloom", capability=(9, 0)) == "eager"  # ALiBi: no sdpa, no flash
    assert resolve_attention("eager", capability=None) == "eager"


@pytest.mark.parametrize(
    ("requested", "arch", "precision", "capability", "message"),
    [
        ("flash_attention_2", "llama", "bf16", None, "the workers have no CUDA GPU"),
        ("torch_varlen", "llama", "fp32", (9, 0), "set strategy.precision=bf16 or model.attn_implementation=sdpa"),
        ("torch_varlen", "llama", "fp16", (7, 0), "this one is sm70: set model.attn_implementation=sdpa"),
        ("sdpa", "bloom", "bf16", (9, 0), "not supported by BLOOM"),
    ],
)
def test_attention_that_cannot_run_names_the_fix(requested, arch, precision, capability, message):
    with pytest.raises(ValueError, match=message):
        resolve_attention(requested, arch, precision, capability)


@pytest.mark.gpu
def test_auto_attention_uses_flash_attn_when_installed_on_gpu():
    pytest.importorskip("flash_attn")
    assert resolve_attention("auto", capability=(9, 0)) == "flash_attention_2"
