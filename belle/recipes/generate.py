"""Answering prompts (method=generate): every prompt of data.path, rendered through the training template, answered
by model.path (a model folder, a LoRA adapter on its base, or a run dir's export) on every worker of one group,
written as rows to <run_dir>/generations.jsonl. Nothing is trained.

Setup (prompts cut to their last data.max_length tokens, the model built for inference: under ZeRO-3
partitioned and answered in lockstep) → the open units (prompt id, sample) dealt by length → batches, each
appended to the worker's shard (belle.generation) → the merge, which proves every unit is answered exactly once.
A rerun after a kill answers only what is missing.
"""

from __future__ import annotations

import math
from pathlib import Path

from belle.config import JobConfig
from belle.config._checks import require
from belle.data.facts import DataFacts
from belle.plan import RecipePlan

KIND = "spmd"
FORMATS = ("prompt", "sft")
SUMMARY = {"answers": "answers", "tokens_per_s": "tokens_per_s"}
"""summary.json key → the metrics.jsonl key whose last logged value it holds."""
READ = ("strategy.zero_stage", "strategy.precision", "strategy.offload_params", "train.seed", "train.hang_timeout_s",
        "train.hang_first_step_s")
"""The keys of the training sections (optim, strategy, train) a generation job reads: the engine it answers with,
the seed of a randomly initialised model, the hang watchdog; others set on the command line are refused."""
READ_VLLM = ("strategy.precision", "train.hang_timeout_s", "train.hang_first_step_s")
"""What engine=vllm reads of them: it holds the whole model on each worker and loads it from model.path."""


def check(job: JobConfig, command_line: set[str], run_dir: Path) -> None:
    """Keys it never reads (optimizer, schedule, batch, checkpoints) set on the command line are refused; unless a
    dry run, model.path is a model folder or a LoRA adapter on one (belle.model.source); engine=openai needs only
    the served model's tokenizer."""
    from belle.model.architecture import check_model_path

    engine = job.method.generate.engine
    read = READ_VLLM if engine == "vllm" else READ
    unread = sorted(key for key in command_line  # a group's choice (strategy=zero2) is read for what it sets
                    if "." in key and key.split(".")[0] in ("optim", "strategy", "train") and key not in read)
    name = job.method.name
    require(not unread, f"{', '.join(unread)} {'is' if len(unread) == 1 else 'are'} not read by method={name}"
                        f"{' with engine=vllm' if engine == 'vllm' else ''}, which trains nothing: remove it "
                        "(method.generate.* sets how it answers)")
    require("data.pack" not in command_line,
            f"data.pack is not read by method={name}, which answers one prompt per call: remove it")
    require(not job.launcher.prepare,
            f"launcher.prepare=true builds a training data cache, but method={name} reads its prompts directly: "
            "drop launcher.prepare; launcher.dry_run=true reads and checks them and plans the run")
    if engine == "openai":  # the server answers: only the served model's tokenizer is read
        require(job.model.path is not None or job.model.tokenizer_path is not None,
                "method.generate.engine=openai sends the prompts as token ids: set model.tokenizer_path=<the served "
                "model's folder> (or model.path)")
        return
    if engine == "vllm":
        require(job.model.path is not None,
                "method.generate.engine=vllm loads the model from a folder: set model.path=DIR (a model, an adapter "
                "or a run dir), or method.generate.engine=hf to answer with the randomly initialised model")
    if not job.launcher.dry_run:
        check_model_path(job.model, adapters=True)
        if engine == "vllm":
            from belle.generation.vllm_engine import adapter_refusal, unavailable
            from belle.model.source import model_source

            reason = unavailable() or adapter_refusal(model_source(job.model.path))
            require(reason is None, f"method.generate.engine=vllm cannot answer here: {reason}")


def read(job: JobConfig, tokenizer) -> list:
    """The job's prompts, each cut to its last data.max_length tokens."""
    from belle.data.prompts import read_prompts

    return read_prompts(job.data.path, tokenizer, job.data.max_length)


def data_facts(job: JobConfig, tokenizer) -> DataFacts:
    """Every prompt is read and checked here."""
    prompts = read(job, tokenizer)
    mean = sum(len(p.ids) for p in prompts) / len(prompts)
    return DataFacts(len(prompts), mean, f"exact: all {len(prompts)} prompts read")


def plan(job: JobConfig, facts: DataFacts, warnings: list[str]) -> RecipePlan:
    """Batches per worker, the tokens to generate at most, and memory per GPU: the weights (whole, or a 1/world
    share under ZeRO-3) and the KV cache of one batch at full length."""
    from belle.config.hardware import GIB, OVERHEAD_GIB
    from belle.model.anatomy import anatomy
    from belle.model.memory import kv_cache_bytes
    from belle.strategy.engine import DTYPES
    from belle.strategy.estimate import gpu_memory_gib

    g, s, c, m = job.method.generate, job.strategy, job.cluster, job.model
    units = facts.num_samples * g.num_samples if facts.num_samples else None
    batches = math.ceil(math.ceil(units / c.world_size) / g.batch) if units else None
    width = 2 if DTYPES[s.precision] != "float32" else 4
    partitioned = s.zero_stage == 3 and g.engine == "hf"  # vLLM holds the whole model on each worker
    weights = anatomy(m).total_params * width / (c.world_size if partitioned else 1)
    longest = job.data.max_length + g.max_new_tokens  # a batch is as long as its longest prompt and answer
    kv = kv_cache_bytes(m, g.batch, longest, width)
    how = "greedy" if g.greedy else f"sampled at temperature {g.temperature}, top_p {g.top_p}, seed {g.seed}"
    lockstep = " in lockstep (ZeRO-3, weights partitioned)" if partitioned and c.world_size > 1 else ""
    section = {
        "engine": g.engine, "prompts": facts.num_samples, "samples_per_prompt": g.num_samples, "answers": units,
        "max_new_tokens": g.max_new_tokens, "tokens_to_generate_max": units and units * g.max_new_tokens,
        "mean_prompt_tokens": facts.mean_tokens and round(facts.mean_tokens, 1), "batch_per_worker": g.batch,
        "batches_per_worker": batches,
        "memory_per_gpu_gib": {"weights": round(weights / GIB, 2), "kv_cache": round(kv / GIB, 2),
                               "total": round((weights + kv) / GIB, 2)},
    }
    generate_line = (f"  generate   {_n(facts.num_samples)} prompts x {g.num_samples} = {_n(units)} answers of <= "
                     f"{g.max_new_tokens} tokens (<= {_n(units and units * g.max_new_tokens)} to generate), {how}; "
                     f"engine {g.engine}")
    answering = g.served_model if g.engine == "openai" else job.model.path or "the randomly initialised model"
    recipe = {"name": "generate", "kind": KIND, "trains": None, "produces": f"answers of {answering}"}
    if g.engine == "openai":  # the server holds the model: nothing of it on the workers, one request per answer
        section |= {"server": g.url, "served_model": g.served_model, "concurrency_per_worker": g.concurrency,
                    "memory_per_gpu_gib": None}
        lines = [generate_line, f"  server     {g.served_model} at {g.url}, {g.concurrency} requests in flight per "
                                "worker"]
        return RecipePlan(recipe, None, None, {"generate": section}, lines)
    needed = (weights + kv) / GIB + OVERHEAD_GIB
    if g.engine == "vllm":
        from belle.generation.vllm_engine import unavailable

        section["gpu_memory_utilization"] = g.memory_fraction
        if c.use_gpu and needed > g.memory_fraction * gpu_memory_gib(job):
            raise ValueError(
                f"engine=vllm holds the whole model on each GPU: about {needed:.1f} GiB (weights {weights / GIB:.1f},"
                f" KV cache {kv / GIB:.1f} for {g.batch} x {longest} tokens) but it may take "
                f"{g.memory_fraction:g} of a {c.gpu_type}'s {gpu_memory_gib(job):g}: lower method.generate.batch "
                f"(now {g.batch}), or set method.generate.engine=hf strategy=zero3 to partition the weights")
        if reason := unavailable():
            warnings.append(f"method.generate.engine=vllm cannot run in this environment: {reason}")
    elif c.use_gpu and needed > gpu_memory_gib(job):
        raise ValueError(
            f"generating takes about {needed:.1f} GiB per GPU (weights {weights / GIB:.1f}, "
            f"KV cache {kv / GIB:.1f} for {g.batch} x {longest} tokens) but a {c.gpu_type} has {gpu_memory_gib(job):g}"
            f": lower method.generate.batch (now {g.batch})" + ("" if s.zero_stage == 3 else " or set strategy=zero3"))
    per_call = (f"{g.batch} sequences in flight per worker (vLLM continuous batching), {_n(batches)} progress steps "
                "per worker" if g.engine == "vllm" else
                f"{g.batch} prompts per worker per call, {_n(batches)} per worker{lockstep}")
    lines = [
        generate_line,
        f"  batches    {per_call}",
        f"  memory     {(weights + kv) / GIB:.2f} GiB per {'GPU' if c.use_gpu else 'worker'}: weights "
        f"{weights / GIB:.2f}, KV cache {kv / GIB:.2f} ({g.batch} x {longest} tokens)",
    ]
    return RecipePlan(recipe, batches, batches, {"generate": section}, lines)


def _n(value) -> str:
    from belle.monitor.progress import short_count

    return "?" if value is None else short_count(value, digits=2)


def prepare(job: JobConfig, run_dir: Path | None) -> None:
    """Nothing to prepare: the prompts are read by each worker."""


def follow_up(job: JobConfig, run_dir: Path) -> None:
    """Nothing follows a generation."""


def preview(job: JobConfig, tokenizer) -> tuple[list, list | None, str]:
    """The first launcher.preview prompts as the model sees them (every token is prompt), with their references."""
    from belle.data.template import IGNORE_INDEX, Sample

    prompts = read(job, tokenizer)[: job.launcher.preview]
    return ([Sample(p.ids, [IGNORE_INDEX] * len(p.ids)) for p in prompts], [p.reference for p in prompts],
            "prompts as the model sees them; the answer is generated after the last token")


def train(job: JobConfig, run_dir: Path) -> dict:
    """Answer every open unit on this rank's share (all ranks call it); rank 0 then merges the shards into
    generations.jsonl (belle.generation.job). Returns whether it stopped on request and the rows merged."""
    from belle.generation.job import generate_all
    from belle.model.load import load_tokenizer
    from belle.train.worker import start_worker

    rank, world, on_gpu = start_worker(job)
    tokenizer = load_tokenizer(job.model)
    done = generate_all(job, Path(run_dir), read(job, tokenizer), tokenizer, rank, world, on_gpu)
    return {"stopped": done.stopped, "rows": done.rows}
