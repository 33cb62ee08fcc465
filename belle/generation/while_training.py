"""The eval section's set scored by the model being trained, every train.eval_generate_every steps: every rank
answers its share with the training engine (belle.generation.answer.batches: dealt by length, under ZeRO-3 in
lockstep), rank 0 scores all the answers as method=eval does (the judge or the rule: belle.score.evaluation) into
<run_dir>/eval-steps/step-N/, and every rank gets the macro scores for the step's metrics."""

from __future__ import annotations

from pathlib import Path

from belle import rundir
from belle.config import JobConfig
from belle.config.generate import GenerateConfig


class ScoreWhileTraining:
    """Built once per rank before the loop; called with the engine and the step on every rank."""

    def __init__(self, job: JobConfig, run_dir: Path, tokenizer, rank: int, world: int):
        from belle.data.eval_set import read_eval_set, read_judge_prompts
        from belle.data.prompts import question_prompts
        from belle.model.generate import Sampler

        e = job.eval
        self.job, self.run_dir, self.rank, self.world = job, Path(run_dir), rank, world
        self.settings = e.generate or GenerateConfig()
        self.items = read_eval_set(e.data)
        self.prompts = {p.id: p for p in question_prompts(
            [(i.id, i.question, i.reference, i.where) for i in self.items], tokenizer, job.data.max_length)}
        self.judge_prompts = read_judge_prompts(e.prompts) if e.scorer == "judge" else {}
        g = self.settings
        self.sampler = Sampler(tokenizer, temperature=g.temperature, top_p=g.top_p, max_new_tokens=g.max_new_tokens,
                               seed=g.seed, rank=rank)

    def __call__(self, engine, step: int) -> dict:
        """{score, score_wo_others, unscored} of the model at ``step`` (the same on every rank)."""
        import torch.distributed as dist

        from belle.generation.answer import batches
        from belle.model.generate import finished
        from belle.score.aggregate import summarize
        from belle.score.evaluation import score_items
        from belle.strategy.engine import generating, local_device

        mine = {}
        with generating(engine, gather=False) as (module, synced_gpus):
            for _, chunk, responses, _ in batches(
                    module, self.sampler, self.prompts, [(pid, 0) for pid in self.prompts], rank=self.rank,
                    world=self.world, batch=self.settings.batch, device=local_device(), synced_gpus=synced_gpus,
                    step=step * 1_000_003):
                for (pid, _), response in zip(chunk, responses, strict=True):
                    mine[pid] = self.sampler.tokenizer.decode(finished(response, self.sampler.eos)[0])
        every = [None] * self.world
        dist.all_gather_object(every, mine)
        result = [None]
        if self.rank == 0:
            answers = {pid: text for part in every for pid, text in part.items()}
            out = self.run_dir / rundir.EVAL_STEPS / f"step-{step:06d}"
            rows = score_items(self.job.eval, out, self.items, answers, self.judge_prompts, beat=lambda n: None)
            summary = summarize(rows, boot=1, seed=self.job.eval.seed)
            result = [{"score": summary["score"]["mean"], "score_wo_others": summary["score_wo_others"]["mean"],
                       "unscored": summary["unscored"]["total"]}]
        dist.broadcast_object_list(result, src=0)
        return result[0]
