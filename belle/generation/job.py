"""A generation job's run on one rank (method=generate, and the answers of method=eval): the open units after an
earlier attempt, the engine, progress and metrics, and the merge on rank 0."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from belle.config import JobConfig
from belle.config._checks import require
from belle.data.prompts import Prompt


@dataclass
class Generated:
    """How a generation ended on this rank: ``stopped`` on request (rows kept, no merge), else ``rows`` merged
    (rank 0; None elsewhere) and the last metrics step logged."""

    stopped: bool
    rows: int | None
    step: int


def generate_all(job: JobConfig, run_dir: Path, prompts: list[Prompt], tokenizer, rank: int, world: int,
                 on_gpu: bool, folder: Path | None = None) -> Generated:
    """Answer every (prompt, sample) unit not yet in the shards (method.generate's settings), then merge them into
    generations.jsonl on rank 0: both in ``folder`` (else run_dir; the metrics, heartbeats and stop requests are
    run_dir's). Call it on every rank of an initialised world."""
    import torch
    import torch.distributed as dist

    from belle import rundir, stop
    from belle.generation.answer import answer
    from belle.generation.remote import answer_remote
    from belle.generation.shards import answered, merge
    from belle.heartbeat import Heartbeat
    from belle.model.generate import Sampler
    from belle.model.source import model_source, weights_fingerprint
    from belle.monitor.metrics import MetricsLog, read_metrics
    from belle.monitor.progress import Progress
    from belle.strategy.engine import build_frozen, generating, local_device
    from belle.train.worker import worker_attention

    g = job.method.generate
    by_id = {p.id: p for p in prompts}
    expected = [(pid, sample) for pid in by_id for sample in range(g.num_samples)]
    rows_dir = Path(folder or run_dir)
    done = answered(rows_dir)
    dist.barrier()  # every rank has read the same answers before any rank appends new ones
    unknown = sorted(set(done) - set(expected))
    require(not unknown, f"{rows_dir / rundir.GENERATION_SHARDS} holds answers to {len(unknown)} prompt(s) not in "
                         f"data.path (e.g. id {unknown[0][0] if unknown else ''}): the prompts changed since the run "
                         "began: use a new launcher.run_dir")
    open_units = [unit for unit in expected if unit not in done]

    if g.engine == "openai":
        produced_by = {"engine": "openai", "url": g.url, "served_model": g.served_model,
                       "tokenizer": tokenizer.name_or_path}
    else:
        source = model_source(job.model.path)
        produced_by = {"path": job.model.path, "kind": source.kind, "base": source.folder, "adapter": source.adapter,
                       "fingerprint": weights_fingerprint(source), "seed": None if source.folder else job.train.seed}
    sampling = {"temperature": g.temperature, "top_p": g.top_p, "max_new_tokens": g.max_new_tokens, "seed": g.seed,
                "engine": g.engine}

    def describe(prompt: Prompt, sample: int, response: str, tokens: int, reason: str, seed: int) -> dict:
        return {"id": prompt.id, "sample": sample, "prompt": prompt.text, "response": response,
                "finish_reason": reason, "prompt_tokens": len(prompt.ids), "prompt_cut": prompt.cut,
                "response_tokens": tokens, "reference": prompt.reference, "sampling": sampling, "seed": seed,
                "model": produced_by, "worker": rank}

    start = max((r.get("step", 0) for r in read_metrics(run_dir)), default=0) if rank == 0 else 0
    metrics = MetricsLog(run_dir, resume_step=start) if rank == 0 else None
    batches = math.ceil(math.ceil(len(open_units) / world) / (1 if g.engine == "openai" else g.batch))
    progress = Progress(start + batches, start) if rank == 0 else None
    heartbeat = Heartbeat(run_dir, rank, start)
    began = time.time()

    def after_batch(index: int, rows: int, tokens: int, seconds: float) -> None:
        heartbeat(start + index)
        if rank == 0:
            record = {"step": start + index, "answers_rank0": rows, "tokens_per_s": round(tokens / seconds, 1)}
            metrics.log(record)
            progress.update(record)

    device = local_device()
    if g.engine == "openai":  # one request per unit: a "batch" of the progress line is one answer
        result = answer_remote(run_dir, g, by_id, open_units, rank=rank, world=world, tokenizer=tokenizer,
                               describe=describe, after_batch=after_batch, folder=rows_dir)
    elif g.engine == "vllm":  # continuous batching: a "batch" of the progress line is method.generate.batch rows
        result = _answer_vllm(job, run_dir, by_id, open_units, rank=rank, world=world, tokenizer=tokenizer,
                              on_gpu=on_gpu, describe=describe, after_batch=after_batch, folder=rows_dir)
    else:
        engine = build_frozen(job.model, job.strategy, job.optim, attention=worker_attention(job, on_gpu, rank, world),
                              world_size=world, seed=job.train.seed)
        sampler = Sampler(tokenizer, temperature=g.temperature, top_p=g.top_p, max_new_tokens=g.max_new_tokens,
                          seed=g.seed, rank=rank)
        with generating(engine, gather=False) as (module, synced_gpus):
            result = answer(run_dir, module, sampler, by_id, open_units, rank=rank, world=world, batch=g.batch,
                            device=device, synced_gpus=synced_gpus, describe=describe, after_batch=after_batch,
                            folder=rows_dir)
    totals = torch.tensor([result.rows, result.tokens, result.stopped], dtype=torch.float64, device=device)
    dist.all_reduce(totals)  # a rank that stopped on request stops them all: none merges
    rows, tokens, stopped = (int(v) for v in totals.tolist())
    step = start + result.batches
    if stopped:
        if rank == 0:
            stop.acknowledge(run_dir, step)
        return Generated(True, None, step)
    dist.barrier()  # every shard is complete
    written = None
    if rank == 0:
        written = merge(rows_dir, expected)
        wall = time.time() - began
        metrics.log({"step": step, "answers": written, "answered_now": rows, "answered_before": len(done),
                     "generated_tokens": tokens, "tokens_per_s": round(tokens / wall, 1) if wall else None})
        print(f"generations: {written} rows → {rows_dir / rundir.GENERATIONS} ({rows} answered now, {len(done)} "
              f"before; {tokens} tokens in {wall:.1f} s)", flush=True)
    return Generated(False, written, step)


def _answer_vllm(job: JobConfig, run_dir: Path, prompts: dict[str, Prompt], units: list, *, rank: int, world: int,
                 tokenizer, on_gpu: bool, describe, after_batch, folder: Path):
    """This rank's share answered by a vLLM engine of its own, shut down before the merge."""
    import gc

    from belle.generation.vllm_engine import answer_vllm, build_llm
    from belle.model.memory import kv_cache_bytes
    from belle.model.source import model_source
    from belle.strategy.engine import DTYPES

    g, source = job.method.generate, model_source(job.model.path)
    longest = job.data.max_length + g.max_new_tokens
    width = 4 if DTYPES[job.strategy.precision] == "float32" else 2
    llm = build_llm(source, precision=job.strategy.precision, max_model_len=longest, batch=g.batch,
                    memory_fraction=g.memory_fraction, kv_cache_gib=kv_cache_bytes(job.model, g.batch, longest, width)
                    / 2**30, seed=g.seed, on_gpu=on_gpu)
    try:
        return answer_vllm(run_dir, llm, source, g, prompts, units, rank=rank, world=world, tokenizer=tokenizer,
                           describe=describe, after_batch=after_batch, folder=folder)
    finally:
        llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()
