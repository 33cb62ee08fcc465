"""Prepare a job's data once: read and check every record, template, tokenize and mask in worker processes over
the machine's cores (records in file order), pack in this process, and write the cache (belle.data.cache).

The rows are exactly those of the in-memory path (build_sft_samples / build_pretrain_blocks, then pack or pad_rows,
the first data.eval_samples samples held out and their copies left out of training; build_pairs: one row per pair,
its chosen then its rejected sequence); tests compare them token for token.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from belle.config import DataConfig
from belle.data.cache import (
    SPLITS,
    build_once,
    cache_dir_errors,
    cache_path,
    check_cache_dir,
    is_complete,
    key_inputs,
    read_meta,
)
from belle.data.conversation import to_turns, validate_text
from belle.data.dataset import DatasetStats, check_blocks, check_kept, check_records
from belle.data.packing import pack_groups
from belle.data.pairs import encode_pairs
from belle.data.records import batched, iter_line_chunks, parse_lines
from belle.data.template import IGNORE_INDEX, encode_many, eos_token_id, tokenize_batch

CHUNK_RECORDS = 2048
"""Records per task of a worker process."""


@dataclass
class Prepared:
    folder: Path
    """The cache folder."""
    meta: dict
    """Its meta.json: what the key covers and the counts."""
    built: bool
    """Whether this call tokenized (else it found the folder complete)."""
    seconds: float
    """Time this call took."""

    def describe(self) -> str:
        """Where the cache is and what it holds, a few lines for the console."""
        m, s = self.meta, self.meta["stats"]
        rows = {split: m["splits"][split]["rows"] for split in SPLITS}
        how = f"prepared in {self.seconds:.1f} s on {m['processes']} processes" if self.built else "reused"
        return (
            f"data cache {self.folder} ({how})\n"
            f"  records {s['records']}, samples {s['samples']}, tokens {s['tokens']} ({s['trained_tokens']} trained)\n"
            f"  rows {rows['train']} train + {rows['eval']} eval of {m['max_length']} tokens, "
            f"padding {m['padding_share']:.2%}\n"
            f"  truncated {s['truncated']}, dropped (no answer token left) {s['dropped_no_trained_tokens']}, "
            f"training copies of eval samples dropped {s['eval_copies']}"
        )


def prepare(data: DataConfig, tokenizer, processes: int | None = None) -> Prepared:
    """The cache of ``data`` with ``tokenizer``: found complete, or built now (once, whoever else asks at the same
    time). A bad record raises DataError (file:line, the fix) and leaves no cache; so does a data.cache_dir that is
    not a writable folder with room (checked before tokenizing, and met while writing)."""
    started = time.time()
    folder = cache_path(data, tokenizer)
    processes = processes or len(os.sched_getaffinity(0))
    if not is_complete(folder):
        check_cache_dir(data)
    with cache_dir_errors(data):
        built = build_once(folder, lambda staging: _build(data, tokenizer, staging, processes))
    return Prepared(folder, read_meta(folder), built, time.time() - started)


class _Piece:
    """A sample (or pretraining block) on its way to the cache: token ids and the template's trained mask."""

    __slots__ = ("input_ids", "trained")

    def __init__(self, input_ids, trained):
        self.input_ids, self.trained = input_ids, trained


def _build(data: DataConfig, tokenizer, staging: Path, processes: int) -> dict:
    started = time.time()
    stats = DatasetStats()
    token_dtype = "uint16" if len(tokenizer) <= 1 << 16 else "int32"
    pieces = _pieces(data, tokenizer, processes, stats)
    units = batched(pieces, 2) if data.pairs else ([piece] for piece in pieces)  # a sample, or a pair's two
    held_out = list(islice(units, data.eval_samples))
    with ExitStack() as open_files:  # closed too where the build fails (a full disk): its staging folder goes
        writers = {split: open_files.enter_context(_SplitWriter(staging, split, token_dtype)) for split in SPLITS}
        for split, part in (("train", _without(units, held_out, stats)), ("eval", held_out)):
            if data.pack:
                groups = pack_groups((piece for unit in part for piece in unit), data.max_length)
            else:
                groups = (unit for unit in part if len(unit[0].input_ids))
            for members in groups:
                writers[split].add(members)
        splits = {split: writer.close() for split, writer in writers.items()}
    check_records(data.path, stats)
    if data.format == "pretrain":
        check_blocks(data.path, stats, data.max_length)
    else:
        check_kept(data.path, stats, data.max_length)
    row_tokens = sum(s["rows"] for s in splits.values()) * data.max_length * (2 if data.pairs else 1)
    return {
        "key": key_inputs(data, tokenizer), "max_length": data.max_length, "pad_token_id": tokenizer.pad_token_id,
        "token_dtype": token_dtype, "splits": splits, "stats": vars(stats),
        "padding_share": 1 - sum(s["tokens"] for s in splits.values()) / row_tokens if row_tokens else 0.0,
        "processes": processes, "seconds": round(time.time() - started, 2),
    }


def _pieces(data: DataConfig, tokenizer, processes: int, stats: DatasetStats) -> Iterator[_Piece]:
    """Kept samples (sft), full blocks (pretrain) or each kept pair's two sequences in file order, with ``stats``
    counted as they pass."""
    import numpy as np

    tasks = iter_line_chunks(data.path, CHUNK_RECORDS)
    results = _in_order(tokenizer, data.format, data.max_length, tasks, processes)
    if data.format == "pretrain":
        stream = np.zeros(0, np.int32)
        for records, tokens in results:
            stats.records += records
            stream = np.concatenate([stream, tokens])
            full = len(stream) - len(stream) % data.max_length
            for start in range(0, full, data.max_length):
                block = stream[start : start + data.max_length]
                stats.samples += 1
                yield _Piece(block, np.ones(len(block), np.uint8))
            stream = stream[full:]
        stats.tokens = stats.trained_tokens = stats.samples * data.max_length
        return
    for records, truncated, dropped, tokens, trained, lengths in results:
        stats.records += records
        stats.truncated += truncated
        stats.dropped_no_trained_tokens += dropped
        stats.samples += len(lengths) // (2 if data.pairs else 1)  # a pair is two sequences
        stats.tokens += len(tokens)
        stats.trained_tokens += int(trained.sum())
        ends = np.cumsum(lengths)
        for start, end in zip(ends - lengths, ends, strict=True):
            yield _Piece(tokens[start:end], trained[start:end])


def _without(units: Iterable[list[_Piece]], held_out: list[list[_Piece]], stats: DatasetStats
             ) -> Iterator[list[_Piece]]:
    """``units`` (samples, or pairs) less the copies of a held-out one (eval is measured on samples never
    trained)."""
    seen = {_identity(unit) for unit in held_out}
    for unit in units:
        if seen and _identity(unit) in seen:
            stats.eval_copies += 1
        else:
            yield unit


def _identity(unit: list[_Piece]) -> tuple[bytes, ...]:
    return tuple(piece.input_ids.tobytes() for piece in unit)


def _in_order(tokenizer, fmt: str, max_length: int, tasks: Iterable, processes: int) -> Iterator[tuple]:
    """Results of the tasks in order, from ``processes`` worker processes with a bounded number in flight (or from
    this process for one)."""
    import multiprocessing

    work = {"pretrain": _encode_texts, "preference": _encode_pairs, "dpo": _encode_pairs}.get(fmt, _encode_samples)
    if processes == 1:
        _setup(tokenizer, max_length, fmt)
        yield from map(work, tasks)
        return
    # fork: a worker starts at once, inherits the tokenizer and imports nothing (spawn and forkserver would import
    # this program's __main__ in each)
    with _single_threaded_tokenizers():
        pool = multiprocessing.get_context("fork").Pool(processes, _worker, (tokenizer, max_length, fmt))
    try:
        pending: deque = deque()
        for task in tasks:
            pending.append(pool.apply_async(work, (task,)))
            if len(pending) >= 2 * processes:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
        pool.close()  # the workers leave on their own
        pool.join()
    finally:
        pool.terminate()  # a bad record, or the prepare itself stopped: end the workers (SIGTERM)


@contextmanager
def _single_threaded_tokenizers():
    """Set TOKENIZERS_PARALLELISM=false while the pool forks: the workers inherit it, so the tokenizers library
    neither warns about a fork after its threads ran nor starts threads of its own; this process keeps its setting."""
    before = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        yield
    finally:
        if before is None:
            del os.environ["TOKENIZERS_PARALLELISM"]
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = before


# what a worker process holds: the tokenizer, max_length and data.format
_tokenizer = None
_max_length = 0
_format = "sft"


def _worker(tokenizer, max_length: int, fmt: str) -> None:
    """Set up a forked worker process. The launcher's stop handlers (SIGTERM, SIGUSR1) are not the worker's: the
    pool ends its workers with SIGTERM; Ctrl-C is the parent's to handle."""
    for signum, action in ((signal.SIGTERM, signal.SIG_DFL), (signal.SIGUSR1, signal.SIG_DFL),
                           (signal.SIGINT, signal.SIG_IGN)):
        signal.signal(signum, action)
    _setup(tokenizer, max_length, fmt)


def _setup(tokenizer, max_length: int, fmt: str) -> None:
    global _tokenizer, _max_length, _format
    _tokenizer, _max_length, _format = tokenizer, max_length, fmt


def _records(task) -> list[tuple[dict, str]]:
    return parse_lines(*task) if isinstance(task, tuple) else task


def _encode_samples(task) -> tuple:
    """(records, truncated, dropped, token ids, trained mask, lengths) of the kept samples of one task."""
    import numpy as np

    records = _records(task)
    samples = encode_many([to_turns(record, where) for record, where in records], _tokenizer, _max_length)
    kept = [s for s in samples if s.n_trained]
    tokens = np.fromiter((t for s in kept for t in s.input_ids), np.int32)
    trained = np.fromiter((label != IGNORE_INDEX for s in kept for label in s.labels), np.uint8, len(tokens))
    lengths = np.fromiter((len(s.input_ids) for s in kept), np.int64, len(kept))
    return len(records), sum(s.truncated for s in samples), len(samples) - len(kept), tokens, trained, lengths


def _encode_pairs(task) -> tuple:
    """As _encode_samples, for pairs: each kept pair's chosen then rejected sequence; counts are of pairs."""
    import numpy as np

    records = _records(task)
    pairs = encode_pairs(records, _tokenizer, _max_length, _format)
    kept = [sample for pair in pairs if pair is not None for sample in pair]
    tokens = np.fromiter((t for s in kept for t in s.input_ids), np.int32)
    trained = np.fromiter((label != IGNORE_INDEX for s in kept for label in s.labels), np.uint8, len(tokens))
    lengths = np.fromiter((len(s.input_ids) for s in kept), np.int64, len(kept))
    truncated = sum(pair is not None and any(s.truncated for s in pair) for pair in pairs)
    return len(records), truncated, pairs.count(None), tokens, trained, lengths


def _encode_texts(task) -> tuple:
    """(records, token ids of every text each followed by EOS) of one task of pretraining records."""
    import numpy as np

    records = _records(task)
    texts = [validate_text(record, where) for record, where in records]
    eos = eos_token_id(_tokenizer)
    return len(records), np.fromiter((t for ids in tokenize_batch(_tokenizer, texts) for t in (*ids, eos)), np.int32)


class _SplitWriter:
    """Appends rows to the four arrays of one split (see belle.data.cache), in buffered writes."""

    FLUSH_PIECES = 8192

    def __init__(self, folder: Path, split: str, token_dtype: str):
        names = ("tokens", "trained", "samples", "rows")
        self.files = {name: open(folder / f"{split}.{name}", "wb") for name in names}  # noqa: SIM115 (see close)
        self.token_dtype = token_dtype
        self.buffers: dict[str, list] = {name: [] for name in self.files}
        self.n_tokens = self.n_samples = self.n_rows = 0
        self.digest = hashlib.sha256()

    def __enter__(self) -> _SplitWriter:
        return self

    def __exit__(self, *_exc) -> None:
        """Close the files of a build stopped before ``close``, dropping what their last flush raises: the build's
        own error is already on its way."""
        for f in self.files.values():
            with suppress(OSError):
                f.close()

    def add(self, members: list[_Piece]) -> None:
        self.buffers["rows"].append(self.n_samples)
        for piece in members:
            self.buffers["samples"].append(self.n_tokens)
            self.buffers["tokens"].append(piece.input_ids)
            self.buffers["trained"].append(piece.trained)
            self.n_tokens += len(piece.input_ids)
            self.n_samples += 1
        self.n_rows += 1
        if len(self.buffers["tokens"]) >= self.FLUSH_PIECES:
            self._flush()

    def close(self) -> dict:
        """Write the end offsets and close; the split's counts and the SHA-256 of what it wrote (its rows)."""
        self.buffers["samples"].append(self.n_tokens)
        self.buffers["rows"].append(self.n_samples)
        self._flush()
        for f in self.files.values():
            f.close()
        return {"rows": self.n_rows, "samples": self.n_samples, "tokens": self.n_tokens,
                "sha256": self.digest.hexdigest()}

    def _flush(self) -> None:
        import numpy as np

        b = self.buffers
        if b["tokens"]:
            self._write("tokens", np.concatenate(b["tokens"]).astype(self.token_dtype).tobytes())
            self._write("trained", np.concatenate(b["trained"]).astype(np.uint8).tobytes())
        for name in ("samples", "rows"):
            self._write(name, np.asarray(b[name], np.int64).tobytes())
        for items in b.values():
            items.clear()

    def _write(self, name: str, data: bytes) -> None:
        self.files[name].write(data)
        self.digest.update(data)
