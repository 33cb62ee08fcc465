"""Find BELLE data files and stream their records (JSON lines, one JSON array, or Parquet), each with where it came
from."""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Iterable, Iterator
from itertools import count, islice
from pathlib import Path

SAMPLES_DIR = Path(__file__).with_name("samples")  # the bundled sample data (belle.data.generate)
_CHUNK_CHARS = 1 << 20  # read size for JSON-array files; tests shrink it to cross chunk borders
_MAX_RECORD_CHUNKS = 64  # a JSON-array element longer than this many chunks is reported, not buffered on
_DECODER = json.JSONDecoder()


class DataError(ValueError):
    """A data file or record that cannot be used; the message names file:line and the fix."""


def resolve_paths(spec: str) -> list[Path]:
    """Files named by `spec`: a path, a glob, or a comma-separated list of those (order kept, duplicates once)."""
    paths: dict[Path, None] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        pattern = os.path.expanduser(part)
        matches = sorted(glob.glob(pattern, recursive=True)) if any(c in pattern for c in "*?[") else [pattern]
        files = [Path(m) for m in matches if Path(m).is_file()]
        if not files:
            what = ("is a folder" if Path(pattern).is_dir() else "is not a regular file" if Path(pattern).exists()
                    else "no such data file")
            raise DataError(
                f"{part}: {what} (data.path={spec!r}): "
                "set data.path=… to a BELLE .json/.jsonl/.parquet file, a glob or a comma-separated list"
            )
        paths.update(dict.fromkeys(files))
    if not paths:
        raise DataError(f"data.path={spec!r} names no file: set data.path=… to a BELLE .json/.jsonl file")
    return list(paths)


def iter_records(spec: str) -> Iterator[tuple[dict, str]]:
    """Yield (record, where) from every file of `spec`, streaming.

    A .parquet file holds one record per row, columns named as the JSON keys (where = "file:#row", from 1); a
    non-.jsonl file whose text starts with '[' is one JSON array (where = "file:#index"); any other file is JSON
    lines (where = "file:line"; BELLE ships JSON lines under .json names too).
    """
    for path in resolve_paths(spec):
        if is_parquet(path):
            yield from _iter_parquet(path)
        else:
            yield from (_iter_json_array(path) if _is_json_array(path) else _iter_json_lines(path))


def iter_line_chunks(spec: str, size: int) -> Iterator[tuple[Path, int, list[bytes]] | list[tuple[dict, str]]]:
    """The records of `spec` in chunks of `size`, for parsing elsewhere: a JSON-lines file as (path, first line
    number, raw lines), any other file as parsed (record, where) lists. `parse_lines` turns the first kind into
    what `iter_records` yields."""
    for path in resolve_paths(spec):
        if is_parquet(path) or _is_json_array(path):
            records = _iter_parquet(path) if is_parquet(path) else _iter_json_array(path)
            yield from batched(records, size)
            continue
        with open(path, "rb") as f:
            first = 1
            while lines := list(islice(f, size)):
                yield path, first, lines
                first += len(lines)


def parse_lines(path: Path, first: int, lines: list[bytes]) -> list[tuple[dict, str]]:
    """(record, where) of JSON lines read from `path` starting at line number `first`; blank lines skipped."""
    parsed = []
    for lineno, line in enumerate(lines, first):
        if lineno == 1:
            line = line.removeprefix(b"\xef\xbb\xbf")
        if line.strip():
            where = f"{path}:{lineno}"
            parsed.append((_parse_line(line, where), where))
    return parsed


def is_parquet(path: Path) -> bool:
    """Whether `path` is read as Parquet (by its suffix)."""
    return path.suffix == ".parquet"


def _iter_parquet(path: Path, batch_rows: int = 4096) -> Iterator[tuple[dict, str]]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises its own error types for a file that is not Parquet
        raise DataError(f"{path}: not a readable Parquet file ({e}): write it with pyarrow or use JSON lines") from None
    index = 0
    for batch in table.iter_batches(batch_size=batch_rows):
        for record in batch.to_pylist():
            index += 1
            yield {k: v for k, v in record.items() if v is not None}, f"{path}:#{index}"


def _is_json_array(path: Path) -> bool:
    if path.suffix == ".jsonl":
        return False
    with open(path, "rb") as f:
        return f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"[")


def batched(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of `size` items (the last may be shorter)."""
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def _checked(value: object, where: str) -> dict:
    if not isinstance(value, dict):
        raise DataError(
            f"{where}: expected a JSON object, got {type(value).__name__}: each record must be one {{…}} object"
        )
    return value


def _iter_json_lines(path: Path) -> Iterator[tuple[dict, str]]:
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            yield from parse_lines(path, lineno, [line])


def _parse_line(line: bytes, where: str) -> dict:
    try:
        value = json.loads(line)
    except UnicodeDecodeError as e:
        raise DataError(f"{where}: not UTF-8 text ({e.reason}): re-encode the file as UTF-8") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: not valid JSON ({e.msg}): fix the line or remove it") from None
    return _checked(value, where)


def _iter_json_array(path: Path) -> Iterator[tuple[dict, str]]:
    with open(path, encoding="utf-8-sig") as f:
        yield from _ArrayReader(path, f)


class _ArrayReader:
    """Streams the elements of a top-level JSON array with raw_decode over bounded chunks of the file."""

    def __init__(self, path: Path, f):
        self.path, self.f = path, f
        self.buf, self.pos, self.eof = "", 0, False
        self.lines_before = 0  # newlines in the part of the file already dropped from buf

    def __iter__(self) -> Iterator[tuple[dict, str]]:
        self._expect("[")
        if self._peek() == "]":
            return
        for index in count():
            self._peek()
            where = f"{self.path}:#{index}"
            yield _checked(self._value(), where), where
            if self._peek() == "]":
                return
            self._expect(",")

    def _fill(self) -> bool:
        """Drop the parsed prefix and read one more chunk; False at end of file."""
        if self.eof:
            return False
        try:
            chunk = self.f.read(_CHUNK_CHARS)
        except UnicodeDecodeError as e:
            raise DataError(f"{self.path}: not UTF-8 text ({e.reason}): re-encode the file as UTF-8") from None
        self.lines_before += self.buf.count("\n", 0, self.pos)
        self.buf, self.pos, self.eof = self.buf[self.pos :] + chunk, 0, not chunk
        return bool(chunk)

    def _peek(self) -> str:
        """The next non-blank character ('' at end of file), leaving pos on it."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in " \t\r\n":
                self.pos += 1
            if self.pos < len(self.buf) or not self._fill():
                return self.buf[self.pos : self.pos + 1]

    def _expect(self, char: str) -> None:
        found = self._peek()
        if found != char:
            self._fail(
                f"expected {char!r} in the JSON array, found {repr(found) if found else 'the end of the file'}",
                self.pos,
            )
        self.pos += 1

    def _value(self) -> object:
        while True:
            try:
                value, end = _DECODER.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as e:
                # an element cut by the chunk end parses once more text is in; a broken one fails at the end of
                # the file or once it would span _MAX_RECORD_CHUNKS chunks
                if len(self.buf) - self.pos < _MAX_RECORD_CHUNKS * _CHUNK_CHARS and self._fill():
                    continue
                self._fail(f"not valid JSON ({e.msg})", e.pos)
            if end < len(self.buf) or not self._fill():  # a number cut by the chunk end must be read again
                self.pos = end
                return value

    def _fail(self, problem: str, index: int):
        line = self.lines_before + self.buf.count("\n", 0, index) + 1
        raise DataError(f"{self.path}:{line}: {problem}: fix the record or remove it")
