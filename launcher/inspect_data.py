"""What the plan needs to know about the data, read on the submitting machine before anything is launched."""

from pathlib import Path

from belle.config import JobConfig
from belle.data.facts import DataFacts, cached_facts
from belle.recipes import recipe


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


def inspect_data(job: JobConfig, strict: bool) -> tuple[DataFacts, list[str]]:
    """Read and check the first ``data.check_records`` records with the model's tokenizer and count the rest, or
    take the exact numbers of the job's prepared data cache when there is one; a recipe that reads its data itself
    tells its own facts (its face's ``data_facts``).

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
    own = recipe(job.method.name).data_facts(job, tokenizer)
    if own is not None:
        return own, warnings
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
