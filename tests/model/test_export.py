"""The end-of-training export reloads with plain transformers / PEFT and gives the trained engine's logits:
2 CPU workers (gloo), tiny LLaMA, ZeRO-3, a few optimizer steps on a fixed batch."""

import json
from pathlib import Path

import pytest
from distributed import spawn

from belle.model.export import export

SEQ = 16
COMMON = (
    "strategy.micro_batch=1", "strategy.global_batch=2", "optim.lr=1e-2", "optim.warmup_steps=0",
    "optim.schedule=constant",
)


def _probe():
    """The fixed input whose logits are compared."""
    import torch

    return torch.arange(4, 4 + SEQ).unsqueeze(0)


def _train_and_export(job, out_dir: str, steps: int) -> list:
    """Build, partition and train the model as the SFT recipe does, export it; the engine's logits on a probe."""
    import deepspeed
    import torch
    import torch.distributed as dist

    from belle.model.load import load_tokenizer
    from belle.strategy.engine import build_engine

    deepspeed.init_distributed(dist_backend="gloo")
    engine = build_engine(
        job.model, job.strategy, job.optim, job.method.lora, attention="sdpa", world_size=dist.get_world_size(),
        total_steps=max(steps, 1), seed=job.train.seed,
    )
    batch = torch.randint(4, job.model.vocab_size, (1, SEQ), generator=torch.Generator().manual_seed(0))
    engine.train()
    for _ in range(steps):
        engine.backward(engine(input_ids=batch, labels=batch, use_cache=False).loss)
        engine.step()
    engine.eval()
    with torch.no_grad():
        logits = engine(input_ids=_probe(), use_cache=False).logits.float()
    export(engine, job.model, job.method.lora, load_tokenizer(job.model), Path(out_dir))
    return logits.tolist()


def _refusal(job, out_dir: str) -> str:
    """Export an untrained LoRA model; the RuntimeError every rank gets (caught, so the workers exit cleanly)."""
    try:
        _train_and_export(job, out_dir, steps=0)
    except RuntimeError as error:
        return str(error)
    return "exported"


def _logits(model):
    """``model``'s logits on the probe, in float32."""
    import torch

    model.eval()
    with torch.no_grad():
        return model(input_ids=_probe(), use_cache=False).logits.float()


def _load(folder: Path, dtype: str = "float32"):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)


def _run(job, out_dir: Path):
    """Train on 2 workers and export to out_dir; rank 0's engine logits."""
    import torch

    return torch.tensor(spawn(_train_and_export, job, str(out_dir), 3)[0])


@pytest.mark.slow
def test_full_finetune_zero3_with_tied_embeddings_reloads_exactly(job, tmp_path, workers_env):
    import torch

    out = tmp_path / "export"
    engine_logits = _run(job("method=sft", "strategy.precision=fp32", "model.tie_word_embeddings=true", *COMMON), out)
    model = _load(out)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    torch.testing.assert_close(_logits(model), engine_logits, atol=1e-5, rtol=0)
    assert (out / "tokenizer.json").is_file() and not list(tmp_path.glob(".export.*"))


@pytest.mark.slow
def test_lora_zero3_adapter_base_and_merged_reload_exactly(job, tmp_path, workers_env):
    import torch
    from peft import PeftModel

    out = tmp_path / "export"
    lora_job = job("strategy.precision=fp32", "method.lora.export_merged=true", "method.lora.dropout=0", *COMMON)
    engine_logits = _run(lora_job, out)
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "base", "merged"]
    adapter_config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(out / "base")
    unmerged = PeftModel.from_pretrained(_load(out / "base"), out / "adapter")
    torch.testing.assert_close(_logits(unmerged), engine_logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(_logits(_load(out / "merged")), engine_logits, atol=1e-5, rtol=0)
    assert not torch.allclose(_logits(_load(out / "base")), engine_logits, atol=1e-3)  # the adapter matters


@pytest.mark.slow
def test_lora_zero3_bf16_adapter_reloads_in_bf16(job, tmp_path, workers_env):
    import torch
    from peft import PeftModel

    out = tmp_path / "export"
    engine_logits = _run(job(*COMMON), out)
    assert sorted(p.name for p in out.iterdir()) == ["adapter", "base"]
    unmerged = PeftModel.from_pretrained(_load(out / "base", "bfloat16"), out / "adapter")
    assert next(unmerged.parameters()).dtype == torch.bfloat16
    # bf16 rounding only: PEFT's reload computes the adapters in fp32, the engine in bf16 (1/64 is one ulp at 2-4)
    torch.testing.assert_close(_logits(unmerged), engine_logits, atol=2 / 64, rtol=0)


@pytest.mark.slow
def test_an_untrained_lora_adapter_is_refused_and_nothing_is_left(job, tmp_path, workers_env):
    out = tmp_path / "export"
    errors = spawn(_refusal, job("strategy.precision=fp32", *COMMON), str(out))
    assert all("every lora_B in the adapter is zero" in error for error in errors), errors
    assert list(tmp_path.iterdir()) == [tmp_path / "tmp"]


@pytest.mark.slow
def test_a_model_folder_with_an_empty_or_missing_weight_is_refused(job, tmp_path):
    import torch

    from belle.model.export import _check_model
    from belle.model.load import build_model

    model = build_model(job("method=sft").model, "sdpa")
    state = model.state_dict()
    model.save_pretrained(tmp_path / "empty", state_dict=state | {"model.norm.weight": torch.empty(0)})
    with pytest.raises(RuntimeError, match=r"empty has 1 empty tensors .*model\.norm\.weight"):
        _check_model(tmp_path / "empty")
    model.save_pretrained(tmp_path / "missing", state_dict={k: v for k, v in state.items() if k != "lm_head.weight"})
    with pytest.raises(RuntimeError, match=r"missing misses 1 of .* weights: \['lm_head\.weight'\]"):
        _check_model(tmp_path / "missing")
