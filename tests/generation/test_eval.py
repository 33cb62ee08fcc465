"""method=eval on two spawned CPU workers (no Ray) against a real OpenAI-compatible judge on 127.0.0.1: a hand-checked
mini set in BELLE's shape (mixed-case and U+00A0 class names), a judge that answers 429 with Retry-After, 500,
garbage and unparsable replies; the per-class table and both macro averages; a rerun on the judge cache sends no
request."""

import json
import re

import pytest
from composed import compose_job
from distributed import spawn
from openai_server import OpenAIServer, Reply, chat_reply, error_reply

# question → the judge's replies in order (the last one repeats); class as BELLE writes it; reference
ITEMS = [
    ("问题甲：什么是光合作用？", "open qa", "植物利用光能把二氧化碳和水变成有机物。", ["得分：0.8"]),
    ("问题乙：地球为什么有四季？", "open qa", "地轴倾斜，太阳直射点移动。", ["理由：基本正确。得分:0.6"]),
    ("问题丙：根据短文，小明几点出门？", "Closed\u00a0QA", "七点。", ["得分：1"]),
    ("问题丁：3加9等于几？", "math", "3+9=12，答案：12", ["得分：0"]),
    ("问题戊：写一个求和函数。", "code", "def f(a, b): return a + b", [error_reply(500, "busy"), "得分：1.0"]),
    ("问题己：把“你好”翻译成英文。", "translation", "Hello.", [Reply(raw=b"<html>oops"), "得分：0.4"]),
    ("问题庚：把这句话改得更正式。", "rewrite", "", ["得分：0.6"]),
    ("问题辛：写一首关于秋天的诗。", "generation", "", ["我觉得不错", "还是不错"]),
    ("问题壬：想三个周末活动。", "brainstorming", "", [error_reply(429, "slow down", headers={"Retry-After": "0.2"}),
                                                "得分：0.9"]),
]
PROMPTS = {
    "open QA": "评价开放问答。", "closed\u00a0QA": "评价封闭问答。", "math": "你是数学老师。",
    "code": "评价代码。", "translation": "评价翻译。", "rewrite": "评价改写。",
    "generation": "评价生成。", "brainstorming": "评价头脑风暴。",
}


def _judge(path, body, n, seen: dict):
    """The scripted judge: each question's replies in turn (a re-ask continues the same item's list)."""
    content = body["messages"][0]["content"]
    question = next(q for q, *_ in ITEMS if q in content)
    replies = next(r for q, _, _, r in ITEMS if q == question)
    index = min(seen.get(question, 0), len(replies) - 1)
    seen[question] = seen.get(question, 0) + 1
    reply = replies[index]
    return chat_reply(reply, model="judge-1-0415") if isinstance(reply, str) else reply


@pytest.fixture(scope="module")
def eval_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval-set")
    (folder / "eval_set.json").write_text("".join(
        json.dumps({"question": q, "std_answer": ref, "class": cls}, ensure_ascii=False) + "\n"
        for q, cls, ref, _ in ITEMS), encoding="utf-8")
    (folder / "eval_prompt.json").write_text("".join(
        json.dumps({"class": cls, "prompt": prompt}, ensure_ascii=False) + "\n" for cls, prompt in PROMPTS.items()),
        encoding="utf-8")
    return folder


def _evaluate(model_dir, eval_files, url, run_dir, cache):
    from belle.recipes import recipe

    job = compose_job(
        "method=eval", f"model.path={model_dir}", f"data.path={eval_files / 'eval_set.json'}",
        f"eval.prompts={eval_files / 'eval_prompt.json'}", f"eval.judge.url={url}", "eval.judge.model=judge-1",
        "eval.judge.concurrency=3", "eval.judge.timeout_s=5", f"eval.judge.cache={cache}", "strategy=zero2",
        "strategy.precision=fp32", "method.generate.max_new_tokens=8", "method.generate.batch=4")
    spawn(recipe("eval").train, job, str(run_dir), world=2)


@pytest.fixture(scope="module")
def evaluated(model_dir, eval_files, tmp_path_factory):
    """The mini set evaluated twice into two run dirs sharing one judge cache: (first, second, requests sent by the
    first, requests sent in all, every request)."""
    from belle.model.tokenizer import tiny_tokenizer

    tiny_tokenizer()
    folder = tmp_path_factory.mktemp("evaluated")
    seen: dict = {}
    with OpenAIServer(lambda path, body, n: _judge(path, body, n, seen)) as server:
        _evaluate(model_dir, eval_files, server.url, folder / "first", folder / "cache.jsonl")
        sent = len(server.requests)
        _evaluate(model_dir, eval_files, server.url, folder / "second", folder / "cache.jsonl")
        return folder / "first", folder / "second", sent, len(server.requests), list(server.requests)


def _read(run_dir):
    return json.loads((run_dir / "eval" / "scores.json").read_text()), [
        json.loads(line) for line in (run_dir / "eval" / "items.jsonl").read_text().splitlines()]


def test_scores_are_the_papers_macro_averages_over_a_judge_that_fails_in_every_way(evaluated):
    first, _, sent, _, requests = evaluated
    scores, rows = _read(first)
    assert sent == 9 + 1 + 1 + 1 + 1  # one per item, the 500, the garbage, the 429, the re-ask
    by_class = {key: value["mean"] for key, value in scores["by_class"].items()}
    assert by_class == pytest.approx({"open qa": 0.7, "closed qa": 1.0, "math": 0.0, "code": 1.0, "translation": 0.4,
                                      "rewrite": 0.6, "generation": None, "brainstorming": 0.9})
    categories = {c: v["mean"] for c, v in scores["by_category"].items()}
    assert categories == pytest.approx({"open qa": 0.7, "closed qa": 1.0, "others": 0.5, "rewrite": 0.5,
                                        "generation": None, "brainstorming": 0.9})
    assert scores["score"]["mean"] == pytest.approx((0.7 + 1.0 + 0.5 + 0.5 + 0.9) / 5)
    assert scores["score_wo_others"]["mean"] == pytest.approx((0.7 + 1.0 + 0.5 + 0.9) / 4)
    assert scores["unscored"] == {"total": 1, "by_class": {"generation": 1}}
    unparsed = next(r for r in rows if r["key"] == "generation")
    assert (unparsed["status"], unparsed["score"], unparsed["judge_reply"]) == ("judge_unparsed", None, "还是不错")
    assert {r["judge_model"] for r in rows} == {"judge-1-0415"}
    assert scores["scored_with"]["template"] == "belle-v1" and len(scores["eval_set_sha256"]) == 64
    math_row = next(r for r in rows if r["key"] == "math")
    assert math_row["rule"]["name"] == "math_final" and math_row["rule"]["score"] in (0.0, 1.0)
    math_message = next(b["messages"][0]["content"] for _, b, _ in requests if "问题丁" in b["messages"][0]["content"])
    belle_shape = (r"你是数学老师。 问题丁：3加9等于几？ 标准回答:3\+9=12，答案：12  "
                   r"模型回答：' .*'。请针对模型回答给出得分，顺便给出理由：")
    assert re.fullmatch(belle_shape, math_message, re.S)  # BELLE's message, byte for byte around the answer
    assert (first / "eval" / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_rerun_on_the_judge_cache_sends_no_request(evaluated):
    first, second, sent, sent_in_all, _ = evaluated
    (scores, _), (again, rows_again) = _read(first), _read(second)
    assert sent_in_all == sent
    assert again["score"] == scores["score"] and all(r["cached"] for r in rows_again)


def test_compare_prints_the_table_and_refuses_deltas_across_eval_sets(evaluated, tmp_path, capsys):
    import shutil

    from launcher.compare import main

    first, second, *_ = evaluated
    other = tmp_path / "other-set"
    shutil.copytree(first, other)
    scores = json.loads((other / "eval" / "scores.json").read_text())
    (other / "eval" / "scores.json").write_text(json.dumps(scores | {"eval_set_sha256": "0" * 64}))
    assert main([str(first), str(second), str(other), "--out", str(tmp_path / "table")]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| run | model | data | method | trainable | hours per epoch | paper | score |")
    second_row = next(line for line in lines if line.startswith("| second "))
    assert "| 0.000 | [0.000, 0.000] |" in second_row  # the same answers and judgments: no difference
    assert "not comparable with first: its eval_set_sha256 differ" in out
    assert (tmp_path / "table" / "comparison.csv").read_text().count("\n") == 4
    assert main([str(tmp_path / "nothing")]) == 2
    assert "holds no eval/scores.json" in capsys.readouterr().err


def test_a_training_run_logs_the_eval_sets_score_beside_its_loss(train_recipe):
    from belle.data.eval_set import read_eval_set
    from belle.monitor.metrics import read_metrics
    from belle.score.rules import unscorable

    job, run_dir = train_recipe("eval=sample", "eval.scorer=rule", "eval.rule=math_final", "train.max_steps=4",
                                "train.eval_generate_every=2", "eval.generate.max_new_tokens=8",
                                "optim.warmup_steps=0", "monitor.log_every=1")
    scored = [line for line in read_metrics(run_dir) if "eval_score" in line]
    assert [line["step"] for line in scored] == [2, 4] and all("loss" in line for line in scored)
    items = read_eval_set(job.eval.data)
    unscored = sum(unscorable("math_final", item.reference) is not None for item in items)
    assert 0 < unscored < len(items) and all(line["eval_unscored"] == unscored for line in scored)
    assert all(0 <= line["eval_score"] <= 1 for line in scored)
    rows = (run_dir / "eval-steps" / "step-000004" / "eval" / "items.jsonl").read_text().splitlines()
    assert len(rows) == len(items)


def test_a_local_judge_model_judges_on_the_jobs_own_workers(model_dir, eval_files, tmp_path, workers_env):
    """eval.judge.model_path: the judge model answers every judge message on the workers; its replies are parsed
    (a random model writes no score: every item is judge_unparsed, its reply kept, and the headline says so)."""
    import torch
    from transformers import AutoModelForCausalLM

    from belle.data.eval_set import read_eval, read_judge_prompts
    from belle.data.prompts import question_prompts
    from belle.model.tokenizer import tiny_tokenizer
    from belle.recipes import recipe
    from belle.score.belle_judge import judge_message

    job = compose_job("method=eval", f"model.path={model_dir}", f"data.path={eval_files / 'eval_set.json'}",
                      f"eval.prompts={eval_files / 'eval_prompt.json'}", f"eval.judge.model_path={model_dir}",
                      "eval.judge.max_tokens=6", "strategy=zero2", "strategy.precision=fp32",
                      "method.generate.max_new_tokens=8", "method.generate.batch=4")
    spawn(recipe("eval").train, job, str(tmp_path), world=2)
    scores, rows = _read(tmp_path)
    assert scores["unscored"]["total"] == len(ITEMS) and {r["status"] for r in rows} == {"judge_unparsed"}
    assert scores["scored_with"]["judge_model"] == str(model_dir)
    # the first item's reply is the judge model's greedy answer to BELLE's message, as plain transformers gives it
    items, _ = read_eval(eval_files / "eval_set.json", eval_files / "eval_prompt.json")
    first = rows[0]
    message = judge_message(read_judge_prompts(eval_files / "eval_prompt.json")[first["key"]],
                            next(i for i in items if i.id == first["id"]), first["response"])
    tokenizer = tiny_tokenizer()
    ids = torch.tensor([question_prompts([("x", message, None, "x")], tokenizer, 10_000)[0].ids])
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=6,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)[0, ids.shape[1]:]
    tokens = out.tolist()
    if tokenizer.eos_token_id in tokens:
        tokens = tokens[:tokens.index(tokenizer.eos_token_id)]
    assert first["judge_reply"] == tokenizer.decode(tokens)
