"""method=generate on two spawned CPU workers of one gloo world (no Ray): greedy answers equal plain transformers
generate one prompt at a time, the workers split the prompts, a rerun after a kill answers only what is missing, and
under ZeRO-3 ranks that finish early wait for the others instead of hanging them."""

import json
import os
import threading
from pathlib import Path

import pytest
from composed import compose_job
from distributed import spawn

from belle import rundir


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / rundir.GENERATIONS).read_text().splitlines()]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, model_dir, prompts_file):
    """One greedy generation of every prompt on two workers: (job, run dir)."""
    from belle.recipes import recipe

    job = compose_job("method=generate", "data=sample_prompts", f"data.path={prompts_file}", f"model.path={model_dir}",
                      "strategy=zero2", "strategy.precision=fp32", "method.generate.max_new_tokens=12",
                      "method.generate.batch=3")
    run_dir = tmp_path_factory.mktemp("generate-run")
    spawn(recipe("generate").train, job, str(run_dir), world=2)
    return job, run_dir


def test_greedy_answers_equal_plain_transformers_one_prompt_at_a_time(first_run, model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from belle.data.prompts import read_prompts

    job, run_dir = first_run
    rows = _rows(run_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prompts = {p.id: p for p in read_prompts(job.data.path, tokenizer, job.data.max_length)}
    assert [row["id"] for row in rows] == list(prompts)  # every prompt once, in the data's order
    assert {row["id"] for row in rows if row["id"].startswith("conv-")} == {"conv-00000", "conv-00001", "conv-00002"}
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    for row in rows:
        ids = torch.tensor([prompts[row["id"]].ids])
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=12,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)[0, ids.shape[1]:]
        tokens = out.tolist()
        if tokenizer.eos_token_id in tokens:
            tokens = tokens[:tokens.index(tokenizer.eos_token_id)]
        assert row["response"] == tokenizer.decode(tokens), row["id"]
        assert row["response_tokens"] == len(tokens)
        assert row["finish_reason"] == ("eos" if len(tokens) < 12 else "length")
    assert {row["worker"] for row in rows} == {0, 1}  # both workers answered, each prompt exactly once
    assert rows[0]["model"]["kind"] == "full" and len(rows[0]["model"]["fingerprint"]) == 16
    assert rows[0]["sampling"] == {"temperature": 0.0, "top_p": 1.0, "max_new_tokens": 12, "seed": 0, "engine": "hf"}


def test_a_generation_prompt_is_the_training_prefix_of_its_record(prompts_file):
    from belle.data.dataset import builder
    from belle.data.prompts import read_prompts
    from belle.data.template import IGNORE_INDEX
    from belle.model.tokenizer import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    records = [json.loads(line) for line in prompts_file.read_text().splitlines()][5:]  # instructions, conversations
    trained = tmp = prompts_file.parent / "records.jsonl"
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    samples, _ = builder("sft")(str(trained), tokenizer, 1024)
    prompts = read_prompts(str(trained), tokenizer, 1024)
    for sample, prompt in zip(samples, prompts, strict=True):
        last_answer = max(i for i, label in enumerate(sample.labels) if label == IGNORE_INDEX
                          and sample.labels[i + 1] != IGNORE_INDEX)
        assert sample.input_ids[:last_answer + 1] == prompt.ids
        assert tokenizer.decode(prompt.ids) == prompt.text


def test_a_rerun_after_a_kill_answers_only_what_is_missing(first_run, tmp_path):
    import shutil

    from belle.monitor.metrics import read_metrics
    from belle.recipes import recipe

    job, done = first_run
    run_dir = tmp_path / "resumed"
    shutil.copytree(done, run_dir)
    (run_dir / rundir.GENERATIONS).unlink()
    shard = run_dir / rundir.GENERATION_SHARDS / "rank-0.jsonl"
    kept = shard.read_text().splitlines(keepends=True)[:2]
    shard.write_text("".join(kept) + kept[0][:25])  # a kill cut the third row short
    (run_dir / rundir.METRICS).unlink()
    spawn(recipe("generate").train, job, str(run_dir), world=2)
    assert [(r["id"], r["response"]) for r in _rows(run_dir)] == [(r["id"], r["response"]) for r in _rows(done)]
    last = read_metrics(run_dir)[-1]
    total = len(_rows(done))
    answered_by_rank0 = sum(1 for r in _rows(done) if r["worker"] == 0)
    assert last["answered_before"] == total - answered_by_rank0 + 2
    assert last["answered_now"] == answered_by_rank0 - 2
    assert shard.read_text().endswith("\n")  # the torn line is gone, the new rows follow whole ones


def _early_finisher(job, gather: bool, trained: bool):
    """Rank 0 stops after 2 new tokens, rank 1 goes on to 10, under ZeRO-3, on a frozen engine or a trained one (a
    PPO actor's): both return (or the watchdog ends the process: a hang)."""
    import torch.distributed as dist

    from belle.model.generate import Sampler
    from belle.model.load import load_tokenizer
    from belle.strategy.engine import build_engine, build_frozen, generating

    timer = threading.Timer(120, os._exit, args=(3,))
    timer.start()
    rank = dist.get_rank()
    if trained:
        engine = build_engine(job.model, job.strategy, job.optim, None, attention="sdpa", world_size=2,
                              total_steps=10, seed=0)
    else:
        engine = build_frozen(job.model, job.strategy, job.optim, attention="sdpa", world_size=2, seed=0)
    tokenizer = load_tokenizer(job.model)
    sampler = Sampler(tokenizer, temperature=0, top_p=1, max_new_tokens=2 if rank == 0 else 10, seed=0, rank=rank)
    prompts = [[5, 6, 7, 8], [9, 10]]
    with generating(engine, gather) as (module, synced_gpus):
        out = sampler.sample(module, prompts, 0, engine.device, synced_gpus=synced_gpus)
    timer.cancel()
    return [len(o) for o in out], synced_gpus


@pytest.mark.parametrize("gather,trained", [(False, False), (True, False), (True, True)],
                         ids=["partitioned-lockstep", "gathered-hooks-off", "trained-engine-gathered"])
def test_zero3_ranks_that_finish_early_do_not_hang_the_others(job, workers_env, gather, trained):
    tiny = job("strategy=zero3", "strategy.precision=fp32", "monitor=off")
    results = spawn(_early_finisher, tiny, gather, trained, world=2)
    assert [lengths for lengths, _ in results] == [[2, 2], [10, 10]]
    assert all(synced is (not gather) for _, synced in results)


def test_engine_openai_sends_the_prompt_tokens_and_writes_the_same_rows(prompts_file, model_dir, tmp_path,
                                                                          workers_env):
    from openai_server import OpenAIServer, completion_reply, error_reply

    from belle.data.prompts import read_prompts
    from belle.model.tokenizer import tiny_tokenizer
    from belle.recipes import recipe

    def serve(path, body, n):
        if n == 0:
            return error_reply(503, "warming up")  # retried
        ids = body["prompt"]
        return completion_reply(f"answer to {len(ids)} tokens", model="served-7b",
                                finish_reason="length" if len(ids) % 2 else "stop")

    with OpenAIServer(serve) as server:
        job = compose_job("method=generate", "data=sample_prompts", f"data.path={prompts_file}",
                          f"model.tokenizer_path={model_dir}", "method.generate.engine=openai",
                          f"method.generate.url={server.url}", "method.generate.served_model=served",
                          "method.generate.concurrency=2")
        spawn(recipe("generate").train, job, str(tmp_path), world=2)
        requests = [body for path, body, _ in server.requests if path == "/v1/completions"]
    prompts = {p.id: p for p in read_prompts(str(prompts_file), tiny_tokenizer(), job.data.max_length)}
    rows = _rows(tmp_path)
    assert len(requests) == len(prompts) + 1 and [r["id"] for r in rows] == list(prompts)
    sent = {tuple(r["prompt"]) for r in requests}
    assert sent == {tuple(p.ids) for p in prompts.values()}  # the template's token ids, as hf would see them
    for row in rows:
        n = len(prompts[row["id"]].ids)
        assert row["response"] == f"answer to {n} tokens"
        assert row["finish_reason"] == ("length" if n % 2 else "eos")
        assert row["model"]["reported"] == "served-7b" and row["model"]["engine"] == "openai"
    assert all(r["temperature"] == 0 and r["max_tokens"] == job.method.generate.max_new_tokens for r in requests)
