"""The DPO recipe on the bundled DPO pairs: it starts at ln 2 (the policy is its reference), its log-probs equal a
plain float64 Hugging Face loop, the precomputed reference equals the one computed on the fly, and it learns."""

import math

import pytest
from distributed import spawn

from belle.monitor.metrics import read_metrics

pytestmark = pytest.mark.slow

DPO = ("data=sample_dpo", "strategy=zero3", "strategy.precision=fp32", "data.max_length=96",
       "method.dpo.max_prompt_length=32", "strategy.micro_batch=2", "strategy.global_batch=8",
       "optim.warmup_steps=0", "data.eval_samples=16", "monitor.log_every=1", "train.max_steps=null")


def test_full_fine_tuning_starts_at_ln2_and_learns_against_its_precomputed_reference(train_recipe):
    job, run_dir = train_recipe("method=dpo", *DPO, "optim.lr=3e-4", "train.max_steps=20", "method.dpo.beta=0.5",
                                "train.eval_every=10")
    assert job.method.dpo_reference == "precomputed"
    lines = read_metrics(run_dir)
    assert lines[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert lines[0]["rewards/chosen"] == pytest.approx(0, abs=1e-5) and lines[0]["margin"] == pytest.approx(0, abs=1e-5)
    # batches of 8 pairs are noisy: the means of the first and the last 10 steps (measured 0.53 → 1.06, 0.66 → 0.80)
    first, last = ({key: sum(line[key] for line in half) / 10 for key in ("margin", "accuracy")}
                   for half in (lines[:10], lines[10:]))
    assert last["margin"] > first["margin"] + 0.3 and last["accuracy"] > first["accuracy"], (first, last)
    held_out = [line for line in lines if "eval_margin" in line]
    assert [line["step"] for line in held_out] == [10, 20] and "eval_rewards/rejected" in held_out[-1]
    assert held_out[-1]["eval_margin"] > 0.5 and held_out[-1]["eval_accuracy"] > 0.6, held_out
    assert (run_dir / "checkpoints" / "step-000020" / "reference-log-probs.pt").is_file()
    assert (run_dir / "export" / "model.safetensors").is_file()


def test_lora_starts_at_ln2_against_the_adapters_switched_off(train_recipe):
    job, run_dir = train_recipe("method=dpo_lora", *DPO, "optim.lr=1e-2", "train.max_steps=2")
    assert job.method.dpo_reference == "adapters_off"
    lines = read_metrics(run_dir)
    assert lines[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert lines[1]["loss"] != lines[0]["loss"]  # the adapters trained: the policy left its reference
    assert (run_dir / "export" / "adapter").is_dir()


def _engine_log_probs(job, count: int) -> dict:
    """In a worker: the engine's log-probs of the first ``count`` held-out pairs in one micro-batch, and the
    precomputed reference table of the held-out split."""
    import torch

    from belle.data.cache import open_cache
    from belle.data.template import pad_id
    from belle.model.load import load_tokenizer
    from belle.recipes.dpo import _precompute, pair_log_probs
    from belle.strategy.engine import build_engine
    from belle.train.worker import start_worker

    rank, world, _ = start_worker(job)
    tokenizer = load_tokenizer(job.model)
    eval_pairs, _ = open_cache(job.data, tokenizer)
    engine = build_engine(job.model, job.strategy, job.optim, None, attention="sdpa", world_size=world,
                          total_steps=1, seed=0)
    dpo, pad = job.method.dpo, pad_id(tokenizer)

    def log_probs(pairs):
        return pair_log_probs(engine, pairs, pad, job.data.max_length, dpo.max_prompt_length)

    with torch.no_grad():
        batch = log_probs([eval_pairs[i] for i in range(count)]).double()
    table = _precompute(log_probs, eval_pairs, rank, world, 3, engine)
    return {"batch": batch.tolist(), "table": table.tolist()}


def test_log_probs_and_the_precomputed_reference_equal_a_float64_loop(job, tmp_path, workers_env):
    import torch
    from transformers import AutoModelForCausalLM

    from belle.data.cache import open_cache
    from belle.data.prepare import prepare
    from belle.model.load import build_model, load_tokenizer
    from belle.rlhf.pair_losses import dpo_loss

    folder = tmp_path / "policy"
    tokenizer = load_tokenizer(job().model)
    build_model(job().model, "sdpa", dtype=torch.float32, seed=3).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    composed = job("method=dpo", *DPO, f"model.path={folder}", "monitor=off")
    prepare(composed.data, tokenizer, processes=1)
    results = spawn(_engine_log_probs, composed, 5, world=2)

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float64).eval()
    eval_pairs, _ = open_cache(composed.data, tokenizer)
    mpl, max_length = composed.method.dpo.max_prompt_length, composed.data.max_length

    def log_prob(ids, start) -> float:  # one sequence alone, unpadded: the sum of log p over its answer tokens
        prompt = list(ids[:start])[-mpl:]
        answer = list(ids[start:])[: max_length - len(prompt)]
        with torch.no_grad():
            logits = model(torch.tensor([prompt + answer])).logits[0].log_softmax(-1)
        return sum(logits[len(prompt) + i - 1, token].item() for i, token in enumerate(answer))

    expected = [[log_prob(p.chosen, p.chosen_start), log_prob(p.rejected, p.rejected_start)] for p in eval_pairs]
    batch = results[0]["batch"]  # fp32 sums of ~50 log-probs of ~-3: equal to about 1e-7 of their size
    assert batch == pytest.approx([row[0] for row in expected[:5]] + [row[1] for row in expected[:5]], rel=1e-6)
    for worker in results:  # every rank holds the whole table
        assert sum(worker["table"], []) == pytest.approx(sum(expected, []), rel=1e-6)

    # the loss of the batch against a reference that differs from it, from the engine's log-probs and per pair in
    # float64 from the formula
    beta, reference = composed.method.dpo.beta, [[c + 3.0, r - 2.0] for c, r in expected[:5]]
    policy = torch.tensor(batch, dtype=torch.float64)
    loss, _, _ = dpo_loss(*policy.chunk(2), *torch.tensor(reference, dtype=torch.float64).T, beta)
    for i, ((c, r), (ref_c, ref_r)) in enumerate(zip(expected[:5], reference, strict=True)):
        assert loss[i].item() == pytest.approx(math.log1p(math.exp(-beta * ((c - ref_c) - (r - ref_r)))), abs=1e-5)
