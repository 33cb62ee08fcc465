"""Evaluating a model (method=eval) as BELLE's papers did: every item of an eval set ({"question","std_answer",
"class"}) answered by model.path through the training template on every worker (as method=generate), then scored
on rank 0 — by an LLM judge over an OpenAI-compatible endpoint with BELLE's per-class prompts, or by a rule — into
eval/items.jsonl, eval/scores.json (per class, the paper's 9 categories, score and score w/o others with bootstrap
intervals) and eval/scores.png. A rerun answers only what is missing and judges from its cache.
"""

from __future__ import annotations

import json
from pathlib import Path

from belle import rundir
from belle.config import JobConfig
from belle.config._checks import require
from belle.data.facts import DataFacts
from belle.plan import RecipePlan
from belle.recipes import generate

KIND = "spmd"
FORMATS = ("eval",)
SUMMARY = {"score": "score", "score_wo_others": "score_wo_others", "unscored": "unscored", "answers": "answers"}
"""summary.json key → the metrics.jsonl key whose last logged value it holds."""
ITEM_COLUMNS = ("id", "class", "category", "score", "status", "question", "reference", "response", "judge_reply")
"""The columns of the W&B table of items."""


def check(job: JobConfig, command_line: set[str], run_dir: Path) -> None:
    """What method=generate refuses, and the eval set and its judge prompts read (every class
    of the set must have a prompt, the bundled prompts only judge the bundled set): refused here, before anything
    starts."""
    generate.check(job, command_line, run_dir)
    e = job.eval
    if not job.launcher.dry_run:
        require(e.missing() is None, e.missing())
        _check_judge_model(job)
    here = all(Path(f).is_file() for f in (*job.data.path.split(","), e.prompts or ""))  # a dry run may lack them
    if e.prompts and (not job.launcher.dry_run or here):
        _check_prompts(job)


def read(job: JobConfig, tokenizer) -> tuple[list, list]:
    """The eval items and their prompts (each question one human turn, cut to its last data.max_length tokens)."""
    from belle.data.eval_set import read_eval_set
    from belle.data.prompts import question_prompts

    items = read_eval_set(job.data.path)
    prompts = question_prompts([(i.id, i.question, i.reference, i.where) for i in items], tokenizer,
                               job.data.max_length)
    return items, prompts


def data_facts(job: JobConfig, tokenizer) -> DataFacts:
    """Every item is read and checked here."""
    _, prompts = read(job, tokenizer)
    return DataFacts(len(prompts), sum(len(p.ids) for p in prompts) / len(prompts),
                     f"exact: all {len(prompts)} items read")


def plan(job: JobConfig, facts: DataFacts, warnings: list[str]) -> RecipePlan:
    """The answers' plan (method=generate's), then how they are scored."""
    own = generate.plan(job, facts, warnings)
    e = job.eval
    if e.missing():
        warnings.append(f"a launch would be refused: {e.missing()}")
    scored = (f"judge {e.judge.model} at {e.judge.url} ({e.judge.concurrency} in flight, key from "
              f"${e.judge.api_key_env}), BELLE's prompts {e.prompts}" if e.scorer == "judge" else f"rule {e.rule}")
    answering = job.model.path or "the randomly initialised model"
    own.recipe = {"name": "eval", "kind": KIND, "trains": None, "produces": f"scores of {answering} on {job.data.name}"}
    own.sections["eval"] = {"scorer": e.scorer, "judge": e.judge.model if e.scorer == "judge" else None,
                            "rule": e.rule if e.scorer == "rule" else None, "agreement_rule": e.agreement_rule,
                            "bootstrap": e.boot}
    own.lines.append(f"  scoring    {scored}; 95% bootstrap intervals ({e.boot} resamples)")
    return own


def prepare(job: JobConfig, run_dir: Path | None) -> None:
    """Nothing to prepare: the items are read by each worker."""


def preview(job: JobConfig, tokenizer) -> tuple[list, list | None, str]:
    """The first launcher.preview questions as the model sees them, with their reference answers."""
    from belle.data.template import IGNORE_INDEX, Sample

    _, prompts = read(job, tokenizer)
    prompts = prompts[: job.launcher.preview]
    return ([Sample(p.ids, [IGNORE_INDEX] * len(p.ids)) for p in prompts], [p.reference for p in prompts],
            "eval questions as the model sees them; the answer is generated after the last token")


def train(job: JobConfig, run_dir: Path) -> dict:
    """Answer every item on all ranks (belle.generation.job), then score them on rank 0 (belle.score.evaluation)
    while the others return."""
    import torch.distributed as dist

    from belle import rundir
    from belle.config import job_dict
    from belle.data.eval_set import read_judge_prompts
    from belle.generation.job import generate_all
    from belle.generation.local_judge import judge_locally
    from belle.heartbeat import Heartbeat
    from belle.model.load import load_tokenizer
    from belle.monitor.metrics import MetricsLog, read_metrics
    from belle.monitor.wandb_run import start_wandb
    from belle.score.belle_judge import judge_message
    from belle.score.evaluation import eval_set_hash, headline, score_items, write_scores
    from belle.train.worker import start_worker

    rank, world, on_gpu = start_worker(job)
    run_dir = Path(run_dir)
    tokenizer = load_tokenizer(job.model)
    items, prompts = read(job, tokenizer)
    done = generate_all(job, run_dir, prompts, tokenizer, rank, world, on_gpu)
    local = job.eval.scorer == "judge" and job.eval.judge.model_path is not None
    if done.stopped or (rank != 0 and not local):
        return {"stopped": done.stopped}
    if local:
        dist.barrier()  # rank 0 has merged the answers: every rank reads them
    rows = [json.loads(line) for line in (run_dir / rundir.GENERATIONS).read_text(encoding="utf-8").splitlines()]
    answers = {row["id"]: row["response"] for row in rows}
    judge_prompts = read_judge_prompts(job.eval.prompts) if job.eval.scorer == "judge" else {}
    replies = None
    if local:  # every rank answers its share of the judge messages with the judge model
        messages = {item.id: judge_message(judge_prompts[item.key], item, answers[item.id]) for item in items}
        replies = judge_locally(job, run_dir, messages, rank, world, on_gpu)
        if replies is None:
            return {"stopped": rank == 0}
    heartbeat = Heartbeat(run_dir, rank, done.step)
    scored = score_items(job.eval, run_dir, items, answers, judge_prompts, lambda n: heartbeat(done.step + n),
                         replies)
    produced = {"model": rows[0]["model"], "generation": rows[0]["sampling"], "data": job.data.name,
                "eval_set": job.data.path, "eval_set_sha256": eval_set_hash(job.data.path)}
    scores = write_scores(job.eval, run_dir, scored, produced)
    last = max((r.get("step", 0) for r in read_metrics(run_dir)), default=0)  # the answers' (and judge's) batches
    record = {"step": last + 1, "score": scores["score"]["mean"], "score_wo_others": scores["score_wo_others"]["mean"],
              "unscored": scores["unscored"]["total"], "answers": len(rows)}
    MetricsLog(run_dir, resume_step=last).log(record)
    wandb = start_wandb(job.monitor, run_dir, job.launcher.name, job_dict(job), resume_step=None)
    if wandb:
        by_category = {f"score/{c}": v["mean"] for c, v in scores["by_category"].items()}
        wandb.log(record | by_category, step=record["step"])
        wandb.table("eval_items", [{key: row.get(key) for key in ITEM_COLUMNS} for row in scored], record["step"])
        wandb.finish()
    print(f"eval: {headline(scores)} → {run_dir / 'eval'}", flush=True)
    return {"score": scores["score"]["mean"]}


def follow_up(job: JobConfig, run_dir: Path) -> JobConfig | None:
    """The evaluation a training job with an eval section ends with: method=eval on its run dir's export, on
    eval.data, in <run_dir>/evaluation (the cluster and strategy the training used). Refused here, before the
    training starts, when it could not run; None for a job without one (and for method=eval itself)."""
    from dataclasses import replace

    from belle.config import DataConfig, MethodConfig
    from belle.config.generate import GenerateConfig

    e = job.eval
    if e is None or job.method.name == "eval":
        return None
    require(job.cluster.kind != "slurm",
            "a training job's closing evaluation (the eval section) runs on cluster=local or ray: under Slurm, "
            "submit method=eval model.path=<the run dir> once the job completes")
    evaluation = replace(
        job, method=MethodConfig(name="eval", generate=e.generate or GenerateConfig()), roles=None,
        data=DataConfig(name=Path(e.data).stem, path=e.data, format="eval", pack=False, max_length=job.data.max_length,
                        smoke_path=e.data),
        model=replace(job.model, path=str(run_dir)), eval=replace(e, data=None, generate=None),
        launcher=replace(job.launcher, name=f"{job.launcher.name}-eval",
                         run_dir=str(Path(run_dir) / rundir.EVALUATION)),
    )
    require(e.missing() is None, e.missing())
    _check_judge_model(evaluation)
    _check_prompts(evaluation)
    return evaluation


def _check_judge_model(job: JobConfig) -> None:
    """A local judge's folder is a model of an architecture this build runs, with its weights."""
    from belle.generation.local_judge import judge_job
    from belle.model.architecture import check_model_path

    if job.eval.scorer == "judge" and job.eval.judge.model_path is not None:
        check_model_path(judge_job(job).model, "eval.judge.model_path")


def _check_prompts(job: JobConfig) -> None:
    """Every class of the eval set has a judge prompt; the bundled prompts judge only the bundled set."""
    from belle.data.eval_set import check_prompts, read_eval_set, read_judge_prompts
    from belle.data.records import SAMPLES_DIR

    e = job.eval
    if e.scorer != "judge":
        return
    bundled = SAMPLES_DIR / "eval"
    require(Path(e.prompts).parent != bundled or all(Path(p).parent == bundled for p in job.data.path.split(",")),
            f"data.path={job.data.path} is not the bundled stand-in, but eval.prompts is the stand-in's judge prompts: "
            "set eval.prompts=<the judge prompts of your eval set> (BELLE's: eval/eval_prompt.json)")
    check_prompts(read_eval_set(job.data.path), read_judge_prompts(e.prompts), source=e.prompts)
