"""Byte-level BPE tokenizers: train one from texts, or get the tiny one trained on the bundled samples (cached)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from belle.data.records import SAMPLES_DIR
from belle.rundir import staged_dir

SPECIAL_TOKENS = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}  # ids 0-3
TINY_VOCAB = 4096


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """A PreTrainedTokenizerFast with byte-level BPE; <unk>=0 <s>=1 </s>=2 (eos) <pad>=3; adds no BOS/EOS itself."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, **SPECIAL_TOKENS)


def tiny_tokenizer(cache_dir: str | None = None):
    """The 4096-token tokenizer of the bundled samples, trained once and cached under
    cache_dir / $BELLE_CACHE / ~/.cache/belle-launcher in a folder keyed by the sample files and vocab size."""
    from transformers import PreTrainedTokenizerFast

    files = sorted(SAMPLES_DIR.glob("*.jsonl"))
    root = Path(cache_dir or os.environ.get("BELLE_CACHE") or Path.home() / ".cache" / "belle-launcher")
    target = root / f"tokenizer-{_fingerprint(files, TINY_VOCAB)}"
    if not (target / "tokenizer.json").exists():
        with staged_dir(target, keep_existing=True) as staging:  # a concurrent run's folder is as good as ours
            train_tokenizer(_strings_of(files), TINY_VOCAB).save_pretrained(staging)
    return PreTrainedTokenizerFast.from_pretrained(target)


def _fingerprint(files: list[Path], vocab_size: int) -> str:
    digest = hashlib.sha256(f"byte-bpe-v1 vocab={vocab_size}".encode())
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _strings_of(files: list[Path]) -> Iterator[str]:
    """Every string value in the JSON-lines files, in file order."""

    def walk(value) -> Iterator[str]:
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for item in value.values():
                yield from walk(item)
        elif isinstance(value, list):
            for item in value:
                yield from walk(item)

    for path in files:
        with open(path, encoding="utf-8") as f:
            for line in f:
                yield from walk(json.loads(line))
