"""What the plan knows about a job's data, read on the submitting machine before anything is launched."""

from dataclasses import dataclass
from pathlib import Path

from belle.config.data import PAIR_FORMATS, DataConfig


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


def cached_facts(meta: dict, folder: Path) -> DataFacts:
    """Exact numbers from a prepared cache's meta.json (a pair-format row is one pair of two sequences)."""
    stats, train = meta["stats"], meta["splits"]["train"]
    rows = max(train["rows"], 1)
    samples_per_row = 1.0 if meta["key"]["format"] in PAIR_FORMATS else train["samples"] / rows
    return DataFacts(
        stats["samples"], stats["tokens"] / stats["samples"], f"exact: prepared cache {folder.name}", train["rows"],
        samples_per_row, train["tokens"] / rows, stats["dropped_no_trained_tokens"],
    )


def token_counts(facts: DataFacts, data: DataConfig) -> tuple[float | None, float | None]:
    """Mean tokens per sample (a pair: both sequences, each cut at data.max_length) and tokens per epoch; None where
    the facts do not tell."""
    sequences = 2 if data.pairs else 1
    mean = min(facts.mean_tokens, sequences * data.max_length) if facts.mean_tokens else None
    return mean, facts.num_samples * mean if facts.num_samples and mean else None
