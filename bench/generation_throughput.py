"""Generation tokens/s: the generate job's batching (belle.generation: prompts dealt longest first, batches of
similar length left-padded, one generate call each) against a plain loop of one transformers generate call per
prompt, on the same model, prompts and settings (greedy, a fixed number of new tokens), side by side in one run;
with --vllm also engine=vllm's engine (belle.generation.vllm_engine.build_llm, every prompt queued at once).

    python bench/generation_throughput.py [--model llama_110m] [--prompts 64] [--batch 16] [--new-tokens 32]
        [--vllm] [--device cpu|cuda] [--precision fp32|bf16]

All use one process (the job runs this once per worker); every answer is exactly new-tokens long (EOS ignored), so
each path generates prompts x new tokens. Also counts the answers equal to the one-prompt answer.
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="llama_110m")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--vllm", action="store_true", help="also time engine=vllm's engine")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    args = parser.parse_args()

    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from composed import compose_job

    from belle.data.prompts import read_prompts
    from belle.data.records import SAMPLES_DIR
    from belle.generation.answer import deal
    from belle.model.generate import Sampler
    from belle.model.load import build_model, load_tokenizer

    job = compose_job(f"model={args.model}", "method=generate", "data=sample_prompts")
    tokenizer = load_tokenizer(job.model)
    prompts = read_prompts(str(SAMPLES_DIR / "prompts.jsonl"), tokenizer, 256)[: args.prompts]
    prompts += read_prompts(str(SAMPLES_DIR / "conversations.jsonl"), tokenizer, 256)[: args.prompts // 4]
    dtype = torch.float32 if args.precision == "fp32" else torch.bfloat16
    model = build_model(job.model, "sdpa", dtype=dtype, seed=0).eval().to(args.device)
    sampler = Sampler(tokenizer, temperature=0, top_p=1, max_new_tokens=args.new_tokens, seed=0, rank=0)
    sampler.config.min_new_tokens = args.new_tokens  # every answer the same length in both paths
    by_id = {p.id: p for p in prompts}
    tokens = len(prompts) * args.new_tokens
    print(f"{job.model.name}: {len(prompts)} prompts ({min(len(p.ids) for p in prompts)}-"
          f"{max(len(p.ids) for p in prompts)} tokens), {args.new_tokens} new tokens each, {torch.get_num_threads()} "
          "torch threads")

    started = time.perf_counter()
    single = {p.id: sampler.sample(model, [p.ids], 0, args.device)[0] for p in prompts}
    plain = time.perf_counter() - started

    units = deal(by_id, [(p.id, 0) for p in prompts], 0, 1)
    started = time.perf_counter()
    batched = {}
    for start in range(0, len(units), args.batch):
        chunk = units[start:start + args.batch]
        for (pid, _), answer in zip(chunk, sampler.sample(model, [by_id[pid].ids for pid, _ in chunk], 0, args.device),
                                    strict=True):
            batched[pid] = answer
    ours = time.perf_counter() - started

    same = sum(batched[pid] == single[pid] for pid in by_id)
    print(f"plain loop, one prompt per call   {plain:7.2f} s  {tokens / plain:8.1f} tokens/s")
    print(f"belle.generation, batch {args.batch:<3d}      {ours:7.2f} s  {tokens / ours:8.1f} tokens/s")
    print(f"speed-up {plain / ours:.2f}x (goal >= 3x); batched answers equal to one-prompt answers: "
          f"{same}/{len(by_id)}")
    if args.vllm:
        seconds, answers = _vllm(model, tokenizer, prompts, args)
        same = sum(answers[pid] == single[pid] for pid in by_id)
        print(f"engine=vllm, {args.batch} in flight       {seconds:7.2f} s  {tokens / seconds:8.1f} tokens/s  "
              f"{plain / seconds:.2f}x the plain loop, {ours / seconds:.2f}x belle.generation; answers equal to "
              f"one-prompt answers: {same}/{len(by_id)}")


def _vllm(model, tokenizer, prompts, args) -> tuple[float, dict]:
    """Seconds for vLLM to answer every prompt (built from ``model`` saved to a temporary folder; the build is not
    timed), and the answers by id."""
    import tempfile

    from belle.generation.vllm_engine import build_llm
    from belle.model.source import ModelSource

    folder = tempfile.mkdtemp(prefix="bench-vllm-")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    llm = build_llm(ModelSource(folder), precision=args.precision, max_model_len=256 + args.new_tokens,
                    batch=args.batch, memory_fraction=0.5, kv_cache_gib=1, seed=0, on_gpu=args.device != "cpu")
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    params = SamplingParams(temperature=0, max_tokens=args.new_tokens, min_tokens=args.new_tokens, ignore_eos=True,
                            detokenize=False)
    started = time.perf_counter()
    outputs = llm.generate([TokensPrompt(prompt_token_ids=p.ids) for p in prompts], params, use_tqdm=False)
    seconds = time.perf_counter() - started
    return seconds, {p.id: list(o.outputs[0].token_ids) for p, o in zip(prompts, outputs, strict=True)}


if __name__ == "__main__":
    main()
