"""Pack samples into rows of exactly max_length tokens whose position ids restart at every sample boundary.

Fed with attention_mask=None, transformers turns restarting position ids into a block-diagonal causal mask
(sdpa/eager, see masking_utils.find_packed_sequence_indices) or varlen sequence lengths (flash attention), so
packed samples never attend to each other; the pad tail restarts too and is a sequence of its own.
Call the model with use_cache=False (or config.use_cache=False): with a cache, transformers skips that detection
and lets packed samples see each other.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import count
from typing import TYPE_CHECKING

from belle.data.records import DataError, batched
from belle.data.template import IGNORE_INDEX, Sample

if TYPE_CHECKING:
    pass


@dataclass(slots=True)
class PackedRow:
    """One row of max_length tokens; the last n_pad tokens are padding."""

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]
    n_pad: int = 0


def pack(
    samples: Iterable[Sample], max_length: int, pad_token_id: int, buffer_size: int = 4096, max_open: int = 256
) -> Iterator[PackedRow]:
    """Rows of `pack_groups`: each group's samples concatenated and padded to max_length."""
    for members in pack_groups(samples, max_length, buffer_size, max_open):
        yield _row(members, max_length, pad_token_id)


def pack_groups(samples: Iterable, max_length: int, buffer_size: int = 4096, max_open: int = 256) -> Iterator[list]:
    """The samples of each packed row (anything with a sized ``input_ids``), by best-fit decreasing over a bounded
    buffer: each buffer of samples, longest first, goes into the open row with the least room that still fits it.
    Rows stay open across buffers (at most `max_open`), so memory is bounded by buffer_size samples + max_open rows
    however long the stream. Rows come out in packing order, not file order: shuffle them downstream.
    """
    open_rows: list[tuple[int, int, list]] = []  # (room left, tie-breaker, samples), sorted
    ids = count()
    for chunk in batched(samples, buffer_size):
        chunk.sort(key=lambda s: len(s.input_ids), reverse=True)
        for sample in chunk:
            n = len(sample.input_ids)
            if n == 0:  # nothing to train or attend to
                continue
            if n > max_length:
                raise DataError(
                    f"a sample of {n} tokens does not fit a packed row of {max_length}: "
                    "encode with the same data.max_length as the packing"
                )
            i = bisect_left(open_rows, (n,))
            if i == len(open_rows):
                room, members = max_length, []
            else:
                room, _, members = open_rows.pop(i)
            members.append(sample)
            if room == n:
                yield members
            else:
                insort(open_rows, (room - n, next(ids), members))
        # rows that no sample of this size range can fill any more, and the fullest beyond max_open, are done
        smallest = len(chunk[-1].input_ids)
        done = max(bisect_left(open_rows, (smallest,)), len(open_rows) - max_open)
        for _, _, members in open_rows[:done]:
            yield members
        del open_rows[:done]
    for _, _, members in open_rows:
        yield members


def pad_rows(samples: Iterable[Sample], max_length: int, pad_token_id: int) -> Iterator[PackedRow]:
    """One sample per row, padded to max_length (data.pack=false): BELLE's own batching, for comparisons."""
    for sample in samples:
        if sample.input_ids:
            yield _row([sample], max_length, pad_token_id)


def collate(rows: list[PackedRow], varlen: bool = False) -> dict:
    """Long tensors input_ids, labels, position_ids of shape (rows, max_length); attention_mask stays None.

    With ``varlen`` (the flash attention paths) also the micro-batch's sequence boundaries as transformers' varlen
    kwargs: ``cu_seq_lens_q/k`` (int32, over the rows flattened into one stream) and ``max_length_q/k`` (ints),
    computed here on the host once, so no attention layer has to find them on the GPU.
    """
    import numpy as np
    import torch

    arrays = {key: np.array([getattr(row, key) for row in rows], dtype=np.int64)
              for key in ("input_ids", "labels", "position_ids")}
    batch: dict = {key: torch.from_numpy(array) for key, array in arrays.items()}
    if varlen:
        positions = arrays["position_ids"].reshape(-1)
        bounds = np.append(np.flatnonzero(positions == 0), positions.size).astype(np.int32)
        longest = int(np.diff(bounds).max())
        cu_seq_lens = torch.from_numpy(bounds)
        batch |= {"cu_seq_lens_q": cu_seq_lens, "cu_seq_lens_k": cu_seq_lens,
                  "max_length_q": longest, "max_length_k": longest}
    return batch


def to_device(batch: dict, device) -> dict:
    """The tensors of a collated batch on ``device`` (ints stay on the host)."""
    return {key: value.to(device, non_blocking=True) if hasattr(value, "to") else value
            for key, value in batch.items()}


def padding_share(rows: Iterable[PackedRow]) -> float:
    """Share of all row tokens that are padding."""
    pad = total = 0
    for row in rows:
        pad += row.n_pad
        total += len(row.input_ids)
    return pad / total if total else 0.0


def _row(members: list[Sample], max_length: int, pad_token_id: int) -> PackedRow:
    """Concatenate; each sample's first label is masked, since in a row it would be predicted from the previous
    sample's last token (unpacked, the causal-LM shift never predicts a first token either)."""
    input_ids: list[int] = []
    labels: list[int] = []
    position_ids: list[int] = []
    for sample in members:
        input_ids += sample.input_ids
        labels.append(IGNORE_INDEX)
        labels += sample.labels[1:]
        position_ids += range(len(sample.input_ids))
    n_pad = max_length - len(input_ids)
    input_ids += [pad_token_id] * n_pad
    labels += [IGNORE_INDEX] * n_pad
    position_ids += range(n_pad)
    return PackedRow(input_ids, labels, position_ids, n_pad)
