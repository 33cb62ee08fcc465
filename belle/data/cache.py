"""The prepared-data cache: one folder per key under data.cache_dir, written once, memory-mapped by every worker.

Megatron's indexed-dataset layout, flat arrays plus an index, per split (``train``, ``eval``) in ``<cache_dir>/<key>/``:
  {split}.tokens    the token ids of every row's samples, row after row (uint16, or int32 for large vocabularies)
  {split}.trained   1 where the template trains the token (uint8)
  {split}.samples   int64: where each sample starts in .tokens, in row order, then the end
  {split}.rows      int64: the index in .samples of each row's first sample, then the number of samples
  meta.json         what the key covers, the dtypes and the counts; the folder appears (by rename) only complete
A row is read back as the PackedRow the packer would build: samples concatenated, each sample's first label masked,
position ids restarting at each sample, the pad tail to max_length. Pair formats (preference, dpo) hold one pair
per row, its chosen then its rejected sequence, read back as a belle.data.pairs.Pair.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from belle.config import DataConfig
from belle.data.packing import PackedRow
from belle.data.pairs import Pair
from belle.data.records import DataError, resolve_paths
from belle.data.template import IGNORE_INDEX
from belle.rundir import DATA_CACHE, size_mismatch, staged_dir

TEMPLATE_VERSION = 2
"""Raise when the template, the packer or this layout changes what a cache holds: every old cache is then unused."""
SPLITS = ("eval", "train")
META = "meta.json"


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of everything in the tokenizer that changes token ids: its full serialised form (vocabulary, merges,
    normalisers) or, for a Python-only tokenizer, its vocabulary; and the EOS and pad ids."""
    digest = hashlib.sha256(f"{type(tokenizer).__name__} eos={tokenizer.eos_token_id} pad={tokenizer.pad_token_id}"
                            .encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())
    else:
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False).encode())
    return digest.hexdigest()[:16]


def key_inputs(data: DataConfig, tokenizer) -> dict:
    """Everything that changes what the cache holds."""
    files = []
    for path in resolve_paths(data.path):
        stat = path.stat()
        files.append([str(path.resolve()), stat.st_size, stat.st_mtime_ns])
    return {
        "template_version": TEMPLATE_VERSION, "files": files, "tokenizer": tokenizer_fingerprint(tokenizer),
        "format": data.format, "max_length": data.max_length, "pack": data.pack, "eval_samples": data.eval_samples,
    }


def cache_root(data: DataConfig) -> Path:
    """data.cache_dir, with ~ expanded; it must be absolute, since workers run in directories of their own."""
    root = Path(data.cache_dir).expanduser()
    if not root.is_absolute():
        raise DataError(f"data.cache_dir={data.cache_dir} is a relative path: set data.cache_dir=<absolute folder>")
    return root


_FILE_SYSTEM_ERRORS = {
    errno.ENOTDIR: "is not a folder", errno.EEXIST: "is not a folder", errno.EROFS: "is on a read-only file system",
    errno.EACCES: "is not writable", errno.EPERM: "is not writable", errno.ENOSPC: "is on a full file system",
    errno.EDQUOT: "is over its disk quota",
}
"""What an OSError's errno says of data.cache_dir."""


def cache_dir_error(data: DataConfig, exc: OSError) -> DataError | None:
    """The one-line error naming data.cache_dir and the fix for a file-system error met writing the cache (None:
    ``exc`` is of another kind, or about a file elsewhere, such as a data file)."""
    root = cache_root(data)
    where = Path(exc.filename) if exc.filename else root
    if exc.errno not in _FILE_SYSTEM_ERRORS or not where.is_relative_to(root):
        return None
    return DataError(
        f"data.cache_dir={data.cache_dir} {_FILE_SYSTEM_ERRORS[exc.errno]} ({exc.strerror}): set "
        "data.cache_dir=<a writable folder with room for the prepared data>"
    )


@contextmanager
def cache_dir_errors(data: DataConfig) -> Iterator[None]:
    """Inside the block, a file-system error about data.cache_dir becomes the one-line DataError naming the fix."""
    try:
        yield
    except OSError as exc:
        error = cache_dir_error(data, exc)
        if error is None:
            raise
        raise error from None


def check_cache_dir(data: DataConfig) -> Path:
    """data.cache_dir, made if need be, after writing a byte to it (and removing it): a DataError naming it and the
    fix where it is not a folder, read-only or full."""
    root = cache_root(data)
    with cache_dir_errors(data):
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=root, prefix=".probe-")
        try:
            os.write(fd, b"\0")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    return root


def cache_path(data: DataConfig, tokenizer) -> Path:
    """The folder of this data + tokenizer + settings (it may not exist yet)."""
    inputs = key_inputs(data, tokenizer)
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]
    return cache_root(data) / f"{data.format}-{data.max_length}-{digest}"


NOT_BUILT = f"no {META}"
"""What ``damage`` says of a folder never built (or being built: meta.json is written last, before the rename)."""


def array_sizes(meta: dict) -> dict[str, int]:
    """The size in bytes of each array file of a cache, from its meta.json's counts and token dtype."""
    import numpy as np

    sizes = {}
    for split in SPLITS:
        counts = meta["splits"][split]
        sizes |= {
            f"{split}.tokens": counts["tokens"] * np.dtype(meta["token_dtype"]).itemsize,
            f"{split}.trained": counts["tokens"], f"{split}.samples": 8 * (counts["samples"] + 1),
            f"{split}.rows": 8 * (counts["rows"] + 1),
        }
    return sizes


def damage(folder: Path) -> str | None:
    """Why ``folder`` holds no whole cache (NOT_BUILT, an unreadable meta.json, an array file missing or of another
    size than its counts give), or None when it does; from the files' sizes, nothing read but meta.json."""
    if not (folder / META).is_file():
        return NOT_BUILT
    try:
        sizes = array_sizes(read_meta(folder))
    except (ValueError, KeyError, TypeError):  # JSON cut short, or not this layout's
        return f"its {META} is unreadable"
    return size_mismatch(folder, sizes)


def is_complete(folder: Path) -> bool:
    """Whether ``folder`` is a whole cache: its meta.json (written last, before the folder gets its name) and every
    array file of the size it gives."""
    return damage(folder) is None


def build_once(folder: Path, build: Callable[[Path], dict]) -> bool:
    """Make ``folder`` by ``build(staging)`` unless it is complete; return whether this call built it.

    One builder per key at a time (an fcntl lock next to the folder): a second job waits, then finds the folder
    complete. ``build`` fills a staging folder on the same file system and returns the meta it writes last; the
    staging folder is then renamed into place, so a build killed half-way leaves only a staging folder, which the
    next builder deletes. A damaged folder (a file since removed or cut short) is replaced the same way, with one
    line saying why.
    """
    if is_complete(folder):
        return False
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        why = damage(folder)
        if why is None:
            return False
        if why != NOT_BUILT:
            print(f"data cache {folder} is damaged ({why}): rebuilding it", flush=True)
        for stale in folder.parent.glob(f".{folder.name}.*"):  # what a killed build left (the lock is a file)
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
        with staged_dir(folder) as staging:  # a folder without meta.json is never a cache: replaced whole
            meta = build(staging)
            (staging / META).write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    return True


def read_meta(folder: Path) -> dict:
    """The meta.json of a complete cache."""
    return json.loads((folder / META).read_text())


def open_cache(data: DataConfig, tokenizer, run_dir: Path | None = None) -> tuple[Rows, Rows]:
    """(eval rows, training rows) memory-mapped from the prepared cache of this job's data: the folder the launcher
    recorded in ``run_dir`` (so this node need not see the data files), else the one their key names. Rows of
    PackedRow, or of Pair for the pair formats."""
    pointer = Path(run_dir) / DATA_CACHE if run_dir is not None else None
    if pointer is not None and pointer.is_file():
        folder = Path(json.loads(pointer.read_text())["folder"])
    else:
        folder = cache_path(data, tokenizer)
    why = damage(folder)
    if why == NOT_BUILT:
        raise DataError(
            f"no prepared data at {folder} on this node: set data.cache_dir=… to a folder every node sees "
            f"(now {data.cache_dir}), or run with launcher.prepare=true first"
        )
    if why is not None:
        raise DataError(
            f"the prepared data at {folder} is damaged ({why}): launch the job again (the launcher rebuilds a "
            f"damaged cache), with data.cache_dir on a file system every node sees whole (now {data.cache_dir})"
        )
    meta = read_meta(folder)
    return tuple((Pairs if data.pairs else Rows)(folder, split, meta) for split in SPLITS)


class Rows(Sequence):
    """The rows of one split, read from the memory-mapped arrays on access; nothing is held per row."""

    def __init__(self, folder: Path, split: str, meta: dict):
        import numpy as np

        counts = meta["splits"][split]
        self.max_length, self.pad = meta["max_length"], meta["pad_token_id"]

        def array(suffix: str, dtype: str, n: int):
            if not n:  # numpy cannot map an empty file
                return np.zeros(0, dtype)
            return np.memmap(folder / f"{split}.{suffix}", dtype=dtype, mode="r", shape=(n,))

        self.tokens = array("tokens", meta["token_dtype"], counts["tokens"])
        self.trained = array("trained", "uint8", counts["tokens"])
        self.samples = array("samples", "int64", counts["samples"] + 1)
        self.rows = array("rows", "int64", counts["rows"] + 1)
        self._len = counts["rows"]

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> PackedRow:
        import numpy as np

        if not -self._len <= index < self._len:
            raise IndexError(index)
        index %= self._len
        starts = np.asarray(self.samples[self.rows[index] : self.rows[index + 1] + 1])
        begin, end = int(starts[0]), int(starts[-1])
        ids = np.asarray(self.tokens[begin:end], dtype=np.int64)
        labels = np.where(self.trained[begin:end] != 0, ids, IGNORE_INDEX)
        firsts = starts[:-1] - begin
        labels[firsts] = IGNORE_INDEX
        positions = np.arange(end - begin) - np.repeat(firsts, np.diff(starts))
        n_pad = self.max_length - (end - begin)
        return PackedRow(
            ids.tolist() + [self.pad] * n_pad, labels.tolist() + [IGNORE_INDEX] * n_pad,
            positions.tolist() + list(range(n_pad)), n_pad,
        )

    def __iter__(self) -> Iterator[PackedRow]:
        return (self[i] for i in range(self._len))



class Pairs(Rows):
    """The pairs of one split of a pair-format cache: row i is pair i, its chosen then its rejected sequence."""

    def __getitem__(self, index: int) -> Pair:
        import numpy as np

        if not -self._len <= index < self._len:
            raise IndexError(index)
        index %= self._len
        first = int(self.rows[index])
        (begin, middle, end) = (int(self.samples[first + k]) for k in range(3))
        ids = np.asarray(self.tokens[begin:end], dtype=np.int64).tolist()
        trained = self.trained[begin:end]
        return Pair(index, ids[: middle - begin], int(np.argmax(trained[: middle - begin])),
                    ids[middle - begin:], int(np.argmax(trained[middle - begin:])))
