"""A local judge (eval.judge.model_path): the job's own workers answer every item's judge message with the judge
model, as they answered the items (belle.generation.job: dealt by length, appended per batch, resumed by id; greedy,
up to eval.judge.max_tokens), the message wrapped in the judge tokenizer's chat template, else in BELLE's; the
replies land in <run_dir>/eval/judge/ and rank 0 parses them (belle.score.evaluation)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from belle import rundir
from belle.config import JobConfig
from belle.config.generate import GenerateConfig
from belle.data.prompts import Prompt


def judge_job(job: JobConfig) -> JobConfig:
    """``job`` answering with the judge model: its architecture read from the folder, greedy, prompts cut to what
    leaves room for the reply."""
    from belle.model.architecture import model_of_folder

    j = job.eval.judge
    model = model_of_folder(j.model_path, job.model, "eval.judge.model_path")
    return replace(job, model=model,
                   method=replace(job.method, generate=GenerateConfig(max_new_tokens=j.max_tokens,
                                                                      batch=job.method.generate.batch)),
                   data=replace(job.data, max_length=model.max_position_embeddings - j.max_tokens))


def judge_locally(job: JobConfig, run_dir: Path, messages: dict[str, str], rank: int, world: int,
                  on_gpu: bool) -> dict[str, str] | None:
    """Every message (by item id) answered by the judge model on every rank → the replies by id on rank 0 (None
    elsewhere, and when a stop request ended it)."""
    import torch.distributed as dist

    from belle.generation.job import generate_all
    from belle.model.load import load_tokenizer

    judging = judge_job(job)
    tokenizer = load_tokenizer(judging.model)
    prompts = [_prompt(name, text, tokenizer, judging.data.max_length) for name, text in messages.items()]
    done = generate_all(judging, run_dir, prompts, tokenizer, rank, world, on_gpu,
                        folder=Path(run_dir) / rundir.JUDGE_ROWS)
    dist.barrier()
    if done.stopped or rank != 0:
        return None
    rows = (Path(run_dir) / rundir.JUDGE_ROWS / rundir.GENERATIONS).read_text(encoding="utf-8").splitlines()
    return {row["id"]: row["response"] for row in map(json.loads, rows)}


def _prompt(name: str, message: str, tokenizer, max_length: int) -> Prompt:
    """One judge message as the judge model reads a user turn: its chat template, else BELLE's."""
    from belle.data.prompts import question_prompts

    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": message}], add_generation_prompt=True,
                                            tokenize=True)
        ids = list(ids["input_ids"] if isinstance(ids, dict) else ids)
        cut = max(0, len(ids) - max_length)
        return Prompt(ids[cut:], tokenizer.decode(ids), None, f"judge:{name}", name, cut)
    return question_prompts([(name, message, None, f"judge:{name}")], tokenizer, max_length)[0]
