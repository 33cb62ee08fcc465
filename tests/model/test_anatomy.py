"""Parameter counts come from the real architectures (meta device) and LoRA counts match what PEFT builds."""

import pytest

from belle.config import LoraConfig
from belle.model.anatomy import anatomy, lora_params

# Published parameter counts of the architectures.
KNOWN = {
    "llama_7b": 6_738_415_616,
    "llama_13b": 13_015_864_320,
    "llama2_7b": 6_738_415_616,
    "qwen2_7b": 7_615_616_512,
    "bloomz_7b1_mt": 7_069_016_064,
    "belle_llama_ext_7b": 6_738_415_616 + 2 * (79_458 - 32_000) * 4096,
}


@pytest.mark.parametrize("name,total", sorted(KNOWN.items()))
def test_total_parameters(name, total, job):
    pack = "data.pack=false" if name.startswith("bloom") else "data.pack=true"  # BLOOM cannot keep samples apart
    assert anatomy(job(f"model={name}", pack).model).total_params == total


def test_lora_count_equals_peft(job):
    """The analytic count (r x (in + out) per adapted linear) is what PEFT actually makes trainable."""
    from belle.model.load import build_model
    from belle.model.lora import apply_lora

    model = job().model
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], modules_to_save=["lm_head"])
    net = apply_lora(build_model(model, "sdpa"), lora)
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert trainable == lora_params(anatomy(model), lora, model.name) > 0


def test_bloom_lora_targets_its_own_module_names(job):
    parts = anatomy(job("model=bloomz_7b1_mt", "data.pack=false").model)
    with pytest.raises(ValueError, match="its linear modules are dense, dense_4h_to_h, dense_h_to_4h, query_key_value"):
        lora_params(parts, LoraConfig(), "bloomz_7b1_mt")
    qkv = LoraConfig(target_modules=["query_key_value"])
    assert lora_params(parts, qkv, "bloomz_7b1_mt") == 30 * 8 * (4096 + 3 * 4096)
