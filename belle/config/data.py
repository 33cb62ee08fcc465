"""Where the training data lives and how it is cut into sequences."""

from dataclasses import dataclass

from omegaconf import MISSING

from belle.config._checks import one_of, positive, require
from belle.config.paths import path_field

FORMATS = ("sft", "pretrain", "preference", "dpo", "prompt", "eval")
PAIR_FORMATS = ("preference", "dpo")
"""Formats whose samples are (chosen, rejected) pairs sharing a prompt: one pair per row, never packed."""


@dataclass
class DataConfig:
    name: str = MISSING
    """Short name shown in plans, e.g. ``belle_2m``."""
    path: str = path_field(MISSING, several=True)
    """A JSONL/JSON/Parquet file, a glob, or a comma-separated list of them."""
    format: str = "sft"
    """sft (BELLE instruction or conversations records), pretrain ({"text"} records), preference (reward-model
    pairs), dpo (DPO pairs) or prompt (PPO's prompts); the two pair formats read {"chosen","rejected"} (full texts,
    split at the last "\n\nAssistant: \n") and {"prompt","chosen","rejected"} records alike; prompt reads {"text"}
    records ending with "\n\nAssistant: \n", or instruction/conversation records whose last answer is the reference
    a rule reward compares with; eval is an eval set in BELLE's {"question","std_answer","class"} form."""
    max_length: int = 1024
    """Tokens per training sequence; longer samples are truncated on the right."""
    pack: bool = True
    """Pack several samples into one sequence (per-sample attention boundaries kept)."""
    eval_samples: int = 0
    """Samples held out from the start of the data for the eval loss; 0 disables eval."""
    num_samples: int | None = None
    """Records in the full dataset, used by the plan without reading the file; None counts the file."""
    mean_tokens: float | None = None
    """Average tokens per sample, used by the plan; None measures it on a prefix of the file."""
    check_records: int = 1000
    """Records read and checked on the submitting machine before anything is launched."""
    cache_dir: str = path_field("${oc.env:BELLE_HOME,'~/.belle'}/data-cache")
    """Where prepared data (token arrays, one folder per data + tokenizer + settings) is kept; on several nodes,
    a folder every node sees."""
    smoke_path: str = path_field(
        "${bundled:instruction.jsonl},${bundled:conversations.jsonl},${bundled:math.jsonl}", several=True
    )
    """Bundled stand-in data that ``+smoke=tiny`` trains on instead of ``path``."""

    @property
    def pairs(self) -> bool:
        """Whether a sample is a (chosen, rejected) pair (data.format preference or dpo)."""
        return self.format in PAIR_FORMATS

    @property
    def packed(self) -> bool:
        """Whether training rows are full sequences: packed samples, or pretraining blocks (always full)."""
        return self.pack or self.format == "pretrain"

    def __post_init__(self) -> None:
        one_of("data.format", self.format, FORMATS)
        positive("data.max_length", self.max_length, 1024)
        require(self.eval_samples >= 0, f"data.eval_samples={self.eval_samples} must be >= 0: set data.eval_samples=0")
        positive("data.check_records", self.check_records, 1000)
        require(bool(self.cache_dir.strip()), "data.cache_dir is empty: set data.cache_dir=<folder for prepared data>")
        if self.num_samples is not None:
            positive("data.num_samples", self.num_samples, "null")
        if self.mean_tokens is not None:
            positive("data.mean_tokens", self.mean_tokens, "null")
