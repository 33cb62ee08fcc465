"""One-GPU smoke benchmark: does the GPU path run, and how fast is each attention path? No Ray needed.

    python bench/gpu_smoke.py --out gpu_smoke.json      # on one H100/H200, about 4 minutes
    python bench/gpu_smoke.py --out smoke.json --cpu    # the same stages, tiny, on CPU (what CI checks; blocks
                                                        # compiled with aot_eager: no inductor C++ build)

Stages, the JSON result rewritten after each so that a timeout still reports:
  env        GPU, compute capability, torch/CUDA, nvcc, varlen_attn's signature, flash-attn present or not
  gpu_tests  pytest -m gpu on tests/model and tests/strategy (the packed-equals-unpacked kernels, ZeRO-Offload's
             CPU Adam)
  recipe_*   the SFT recipe in an NCCL world of one, bf16, activation checkpointing: ZeRO-2 full fine-tune and
             ZeRO-3 + LoRA with trained embeddings (modules_to_save), ZeRO-2 with compiled blocks, a few steps
             each, export written
  attention  a 1.1B LLaMA (GQA) trained with torch's fused AdamW (no DeepSpeed: isolates attention), bf16, packed
             rows of BELLE-like lengths, micro-batch 4 x 2048: tokens/s, MFU and peak memory per attention path,
             and each path's packed logits against every sample run alone
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LLAMA_1B = dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048)
"""TinyLlama-1.1B's shape: the MFU anchor (56% on A100 with flash-attn 2 and fused kernels)."""
LLAMA_TINY = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cpu", action="store_true", help="tiny shapes on CPU, gloo: checks the script itself")
    parser.add_argument("--only", help="comma-separated stage names to run (default: all)")
    parser.add_argument("--recipe", help=argparse.SUPPRESS)  # internal: one recipe run in a fresh process
    parser.add_argument("--run-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.recipe:
        _recipe_worker(args.recipe, args.run_dir, args.cpu)
        return
    result: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "cpu_check": args.cpu, "stages": {}}
    stages = [("env", lambda: env()), ("gpu_tests", lambda: gpu_tests(args.cpu))]
    stages += [(f"recipe_{kind}", lambda kind=kind: recipe(kind, args.cpu))
               for kind in ("zero2", "zero3_lora", "zero2_compiled")]
    stages.append(("attention", lambda: attention(args.cpu)))
    if args.only:
        stages = [(name, stage) for name, stage in stages if name in args.only.split(",")]
    for name, stage in stages:
        began = time.time()
        try:
            outcome = {"status": "ok", **stage()}
        except Exception as error:  # the next stages still run: one report with everything that worked
            outcome = {"status": "failed", "error": f"{type(error).__name__}: {error}",
                       "traceback": traceback.format_exc()[-3000:]}
        outcome["seconds"] = round(time.time() - began, 1)
        result["stages"][name] = outcome
        args.out.write_text(json.dumps(result, indent=2))
        print(f"[gpu_smoke] {name}: {outcome['status']} in {outcome['seconds']} s "
              f"{outcome.get('summary', outcome.get('error', ''))}", flush=True)
    failed = [name for name, outcome in result["stages"].items() if outcome["status"] != "ok"]
    sys.exit(1 if failed else 0)


def env() -> dict:
    """What this machine has."""
    import inspect

    import torch

    from belle.model.attention import torch_varlen_available
    from belle.monitor.metrics import gpu_peak_flops

    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "flash_attn": importlib.util.find_spec("flash_attn") is not None}
    for module in ("transformers", "deepspeed", "peft"):
        info[module] = __import__(module).__version__
    if torch_varlen_available():
        from torch.nn.attention.varlen import varlen_attn

        info["varlen_attn"] = str(inspect.signature(varlen_attn))
    try:
        info["nvcc"] = subprocess.run(["nvcc", "--version"], capture_output=True, text=True).stdout.strip()[-60:]
    except OSError:
        info["nvcc"] = None
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        info |= {"gpu": name, "capability": torch.cuda.get_device_capability(), "peak_tflops": (
            gpu_peak_flops(name) or 0) / 1e12, "memory_gib": torch.cuda.get_device_properties(0).total_memory / 2**30}
    info["summary"] = f"{info.get('gpu', 'CPU')}, torch {info['torch']}, flash_attn {info['flash_attn']}"
    return info


def gpu_tests(cpu: bool) -> dict:
    """The `gpu` tests of the model and strategy packages (packed == unpacked per kernel, ZeRO-Offload)."""
    if cpu:
        return {"summary": "skipped on CPU"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                           "tests/model", "tests/strategy"], cwd=ROOT, capture_output=True, text=True)
    tail = done.stdout.strip().splitlines()[-15:]
    if done.returncode not in (0, 5):
        raise RuntimeError("pytest -m gpu failed:\n" + "\n".join(tail))
    return {"summary": tail[-1] if tail else "", "tail": tail}


def recipe(kind: str, cpu: bool) -> dict:
    """The SFT recipe in a fresh process (its own NCCL world of one); its metrics and export."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"smoke-{kind}-"))
    command = [sys.executable, __file__, "--out", "-", "--recipe", kind, "--run-dir", str(run_dir)]
    done = subprocess.run(command + (["--cpu"] if cpu else []), cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"recipe {kind} exited {done.returncode}:\n{(done.stdout + done.stderr)[-2500:]}")
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [line["loss"] for line in lines if "loss" in line]
    export = sorted(str(p.relative_to(run_dir)) for p in (run_dir / "export").rglob("*.safetensors"))
    if not export:
        raise RuntimeError(f"recipe {kind} wrote no export weights")
    attention = next((line for line in done.stdout.splitlines() if line.startswith("workers:")), "")
    last = lines[-1]
    return {"summary": f"{attention}; loss {losses[0]:.3f} -> {losses[-1]:.3f}, export {export}",
            "losses": losses, "tokens_per_s": last.get("tokens_per_s"), "mfu": last.get("mfu"),
            "memory_gib": last.get("memory_gib"), "export": export}


def _recipe_worker(kind: str, run_dir: Path, cpu: bool) -> None:
    """Compose the job as `python -m launcher` would and call the recipe in a world of one."""
    import torch
    from hydra import compose, initialize_config_module

    from belle.recipes.sft import train
    from launcher.compose import to_job
    from launcher.store import register

    sys.path.insert(0, str(ROOT / "tests"))
    from distributed import free_port

    os.environ |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0", "LOCAL_RANK": "0",
                   "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"}
    if not cpu:
        torch.cuda.set_device(0)
    else:  # dynamo and AOT autograd trace the blocks as on a GPU, without inductor's C++ build (a minute on 2 cores)
        compile_ = torch.compile
        torch.compile = lambda *a, **kw: compile_(*a, **({"backend": "aot_eager"} | kw))
    overrides = [
        "strategy.micro_batch=2", "strategy.global_batch=4", "strategy.activation_checkpointing=true",
        "data.max_length=512", "train.max_steps=6", "optim.warmup_steps=0", "optim.lr=1e-3",
        "monitor.wandb_mode=disabled", "monitor.log_every=1", "data.eval_samples=8",
        f"launcher.run_dir={run_dir}",
    ]
    overrides += ["cluster.gpus_per_node=0", "strategy.precision=bf16"] if cpu else [
        "cluster.gpus_per_node=1", "strategy.precision=bf16"]
    overrides += {
        "zero2": ["method=sft", "strategy=zero2"],
        "zero3_lora": ["method=lora_tiny", "strategy=zero3"],
        "zero2_compiled": ["method=sft", "strategy=zero2", "strategy.compile=true"],
    }[kind]
    register()
    with initialize_config_module(config_module="launcher.conf", version_base="1.3"):
        job = to_job(compose(config_name="config", overrides=overrides))
    from belle.data.prepare import prepare
    from belle.model.load import load_tokenizer

    prepare(job.data, load_tokenizer(job.model))  # the launcher's step before any worker starts
    print(json.dumps(train(job, run_dir), default=str), flush=True)


def attention(cpu: bool) -> dict:
    """Each attention path on the same model and rows: speed, memory and packed-vs-alone logits."""

    from belle.model.attention import VARLEN, register_torch_varlen

    device = "cpu" if cpu else "cuda"
    shape, seq, micro = (LLAMA_TINY, 128, 2) if cpu else (LLAMA_1B, 2048, 4)
    kernel = None
    if cpu:  # torch's varlen kernel is CUDA-only: the tests' reference stands in, so the glue still runs
        sys.path.insert(0, str(ROOT / "tests" / "model"))
        from test_attention import reference_varlen as kernel
    register_torch_varlen(kernel=kernel)
    # (attention, boundaries per micro-batch as kwargs, activation recompute, layers compiled)
    variants = [("sdpa", False, True, False), (VARLEN, False, True, False), (VARLEN, True, True, False),
                (VARLEN, True, False, False)]
    if importlib.util.find_spec("flash_attn") and not cpu:
        variants += [("flash_attention_2", True, True, False), ("flash_attention_2", True, False, False)]
    if not cpu:  # last: compiling each decoder block fuses the norms, RoPE and SwiGLU around the kernel
        variants += [(VARLEN, True, True, True), (VARLEN, True, False, True)]
    rows = _rows(seq, shape["vocab_size"], count=micro * 13)
    results, model = {}, _model(shape, device)
    results["reference: no boundaries"] = {"logits_max_diff_vs_alone": _packed_vs_alone(model, "sdpa", False, [
        replace(row, position_ids=list(range(len(row.position_ids)))) for row in rows[:2]], device, rows[:2])}
    for name, kwargs, recompute, compiled in variants:
        label = (f"{name}{'+kwargs' if kwargs else ''}{'' if recompute else ' no-recompute'}"
                 f"{' compiled' if compiled else ''}")
        try:
            if compiled:
                _compile_blocks(model)
            results[label] = _train_speed(model, name, kwargs, recompute, rows, micro, seq, shape, device)
            results[label]["logits_max_diff_vs_alone"] = _packed_vs_alone(model, name, kwargs, rows[:2], device)
        except Exception as error:
            results[label] = {"error": f"{type(error).__name__}: {str(error)[:400]}"}
    best = max((r for r in results.values() if "mfu" in r), key=lambda r: r["mfu"] or 0, default=None)
    summary = ", ".join(f"{k}: {v['tokens_per_s']:.0f} tok/s MFU {v['mfu'] or 0:.3f}" if "mfu" in v
                        else f"{k}: {v.get('error', v)}"[:120] for k, v in results.items())
    return {"summary": summary, "variants": results, "best_mfu": best and best["mfu"],
            "model": shape, "seq": seq, "micro_batch": micro}


def _compile_blocks(model) -> None:
    """torch.compile each decoder block in place (one compiled graph serves all: they share their code)."""
    import torch._dynamo

    torch._dynamo.config.cache_size_limit = 64
    for block in model.model.layers:
        block.compile(dynamic=True)


def _model(shape: dict, device: str):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(**shape, attn_implementation="sdpa")
    return LlamaForCausalLM(config).to(device=device, dtype=torch.bfloat16)


def _rows(seq: int, vocab: int, count: int) -> list:
    """Packed rows of synthetic samples with BELLE-like lengths (log-normal, median ~350 tokens at 2048)."""
    import numpy as np

    from belle.data.packing import pack
    from belle.data.template import Sample

    rng = np.random.default_rng(0)
    samples, tokens = [], 0
    while tokens < count * seq * 1.05:
        n = int(np.clip(rng.lognormal(np.log(350 * seq / 2048), 0.8), 8, seq))
        ids = rng.integers(4, vocab, n).tolist()
        samples.append(Sample(ids, ids))
        tokens += n
    return list(pack(samples, seq, pad_token_id=0))[:count]


def _train_speed(model, name, kwargs, recompute, rows, micro, seq, shape, device) -> dict:
    """3 warm-up and 10 timed optimizer steps; tokens/s, MFU (model FLOPs, no recompute) and peak memory."""
    import torch

    from belle.data.packing import collate, to_device
    from belle.monitor.flops import model_flops_per_token
    from belle.monitor.metrics import device_peak_flops

    model.set_attn_implementation(name)
    model.train()
    if recompute:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.activation_checkpointing_disable()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device == "cuda")
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    batches = [to_device(collate(rows[i:i + micro], varlen=kwargs), device) for i in range(0, len(rows), micro)]
    losses = []
    for index, batch in enumerate(batches):
        if index == 3:
            if device == "cuda":
                torch.cuda.synchronize()
            began = time.time()
        loss = model(**batch, attention_mask=None, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.time() - began
    timed = len(batches) - 3
    tokens_per_s = timed * micro * seq / seconds
    total = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()  # a lookup
    flops = model_flops_per_token(total, shape["num_hidden_layers"], shape["hidden_size"], seq, lora=False)
    peak = device_peak_flops(device)
    del optimizer
    return {
        "tokens_per_s": round(tokens_per_s), "step_s": round(seconds / timed, 4),
        "mfu": round(tokens_per_s * flops / peak, 4) if peak else None,
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None,
        "loss_first_last": [round(losses[0].item(), 3), round(losses[-1].item(), 3)],
    }


def _packed_vs_alone(model, name, kwargs, rows, device, samples=None) -> float:
    """Largest |logit| difference between each packed sample (as ``samples`` bounds them, by default ``rows``)
    and the same sample run alone (sdpa)."""
    import torch

    from belle.data.packing import collate, to_device

    model.eval()
    with torch.no_grad():
        model.set_attn_implementation(name)
        batch = to_device(collate(rows, varlen=kwargs), device)
        batch.pop("labels")
        packed = model(**batch, attention_mask=None, use_cache=False).logits.float()
        model.set_attn_implementation("sdpa")
        worst = 0.0
        for r, row in enumerate(samples or rows):
            starts = [i for i, p in enumerate(row.position_ids) if p == 0] + [len(row.position_ids)]
            for a, b in zip(starts[:-1], starts[1:], strict=True):
                ids = torch.tensor([row.input_ids[a:b]], device=device)
                alone = model(input_ids=ids, use_cache=False).logits.float()[0]
                worst = max(worst, (packed[r, a:b] - alone).abs().max().item())
    return round(worst, 4)


if __name__ == "__main__":
    main()
