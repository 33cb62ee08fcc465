"""What the plan needs to know about the data, read on the submitting machine before anything is launched."""

from dataclasses import dataclass
from pathlib import Path

from belle.config import JobConfig


@dataclass(frozen=True)
class DataFacts:
    num_samples: int | None
    """Records in the whole dataset (None: unknown here)."""
    mean_tokens: float | None
    """Average tokens per record after the template and truncation (None: unknown here)."""
    source: str
    """Where the numbers come from, for the plan."""
    rows: int | None = None
    """Training rows of the prepared cache (None: no cache yet, the plan estimates them)."""
    samples_per_row: float | None = None
    """Samples per training row in the prepared cache."""
    tokens_per_row: float | None = None
    """Real (not padding) tokens per training row in the prepared cache."""
    dropped: int | None = None
    """Samples (pairs) dropped for having no answer token left after truncation: all of them in the prepared cache,
    else among the records checked (None: nothing read)."""


def weights_missing(job: JobConfig) -> str | None:
    """Why the job has no weights to start from, or None when it has (a folder, or random init by choice)."""
    if job.model.path is None and not job.model.random_init:
        return (
            f"model={job.model.name} has no weights: set model.path=<local Hugging Face folder> "
            "(or model.random_init=true to train from random weights)"
        )
    if job.model.path is not None and not Path(job.model.path).expanduser().exists():
        return f"model.path={job.model.path} does not exist: point it at a local Hugging Face model folder"
    return None


def cached_facts(meta: dict, folder: Path) -> DataFacts:
    """Exact numbers from a prepared cache's meta.json (a pair-format row is one pair of two sequences)."""
    from belle.config.data import PAIR_FORMATS

    stats, train = meta["stats"], meta["splits"]["train"]
    rows = max(train["rows"], 1)
    samples_per_row = 1.0 if meta["key"]["format"] in PAIR_FORMATS else train["samples"] / rows
    return DataFacts(
        stats["samples"], stats["tokens"] / stats["samples"], f"exact: prepared cache {folder.name}", train["rows"],
        samples_per_row, train["tokens"] / rows, stats["dropped_no_trained_tokens"],
    )


def inspect_data(job: JobConfig, strict: bool) -> tuple[DataFacts, list[str]]:
    """Read and check the first ``data.check_records`` records with the model's tokenizer and count the rest, or
    take the exact numbers of the job's prepared data cache when there is one.

    ``strict`` (a launch or a preview) turns a missing file or model folder into an error; a dry run notes it and
    plans from the config's numbers.
    """
    from belle.data.cache import cache_path, is_complete, read_meta
    from belle.data.dataset import builder
    from belle.data.records import DataError, iter_records, resolve_paths
    from belle.model.load import load_tokenizer

    d = job.data
    warnings: list[str] = []
    missing = weights_missing(job)
    if missing and strict:
        raise ValueError(missing)
    if missing:
        warnings.append(missing)
    try:
        resolve_paths(d.path)
    except DataError:
        if strict:
            raise
        warnings.append(f"data.path={d.path} is not on this machine: it is read and checked at launch")
        return DataFacts(d.num_samples, d.mean_tokens, "config" if d.mean_tokens else "unknown"), warnings
    if missing:
        return DataFacts(d.num_samples, d.mean_tokens, "config (no tokenizer here)"), warnings
    tokenizer = load_tokenizer(job.model)
    if d.format == "prompt":  # PPO's controller reads every prompt itself: read and check them all here first
        from belle.recipes.ppo import prompt_source

        prompts = prompt_source(job, tokenizer)
        mean = sum(len(p.ids) for p in prompts) / len(prompts)
        return DataFacts(len(prompts), mean, f"exact: all {len(prompts)} prompts read"), warnings
    folder = cache_path(d, tokenizer)
    if is_complete(folder):  # every record was checked when it was prepared
        return cached_facts(read_meta(folder), folder), warnings
    _, stats = builder(d.format)(d.path, tokenizer, d.max_length, limit=d.check_records)
    if stats.dropped_no_trained_tokens:
        warnings.append(
            f"{stats.dropped_no_trained_tokens} of the first {stats.records} {'pairs' if d.pairs else 'samples'} "
            f"have no answer token left after truncation at data.max_length={d.max_length} and are skipped"
        )
    num_samples = d.num_samples or sum(1 for _ in iter_records(d.path))
    measured = stats.tokens / stats.records
    mean_tokens = d.mean_tokens or measured
    source = f"measured on the first {stats.records} records" if not d.mean_tokens else "config"
    return DataFacts(num_samples, mean_tokens, source, dropped=stats.dropped_no_trained_tokens), warnings
