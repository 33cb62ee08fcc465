"""The part of the recipe face that the SPMD trainers (sft, pretrain, rm, dpo) share; each adds its own ``plan``.

They read a data cache prepared before the workers start (belle.train.prepare), plan one worker group
(belle.train.plan), preview their training samples with the trained tokens marked, and report their last loss and
eval loss.
"""

from pathlib import Path

from belle.config import JobConfig
from belle.data.facts import DataFacts
from belle.recipes.eval import follow_up  # noqa: F401 (the face: a job's eval section ends it with an evaluation)
from belle.train.prepare import prepare as prepare_rows

SUMMARY = {"final_loss": "loss", "eval_loss": "eval_loss"}
"""summary.json key → the metrics.jsonl key whose last logged value it holds."""


def check(job: JobConfig, command_line: set[str], run_dir: Path) -> None:
    """Unless a dry run, model.path is a full model folder of the model group's architecture. A trainer reads every
    key it is given; its checkpoints and data are checked when it prepares."""
    from belle.model.architecture import check_model_path

    if not job.launcher.dry_run:
        check_model_path(job.model)


def data_facts(job: JobConfig, tokenizer) -> DataFacts | None:
    """None: the launcher's shared reader (the prepared cache, or the first data.check_records records) tells."""
    return None


def prepare(job: JobConfig, run_dir: Path | None) -> None:
    """The data cache, its steps and, for a run, its rows checked against a resumed run's (belle.train.prepare)."""
    prepare_rows(job, run_dir)


def preview(job: JobConfig, tokenizer) -> tuple[list, list | None, str | None]:
    """The first launcher.preview training samples (a pair: its chosen, then its rejected sequence); no references;
    the launcher's own legend."""
    from belle.data.dataset import builder

    n = job.launcher.preview
    samples, _ = builder(job.data.format)(job.data.path, tokenizer, job.data.max_length, limit=n)
    samples = samples[:n]
    if job.data.pairs:
        samples = [sample for pair in samples for sample in pair]
    return samples, None, None
