"""Packing: exact rows on a hand example, invariants and padding waste on the bundled data, collation."""

from itertools import pairwise

import pytest

from belle.data.dataset import build_sft_samples
from belle.data.packing import PackedRow, collate, pack, pad_rows, padding_share
from belle.data.records import DataError
from belle.data.template import IGNORE_INDEX, Sample

PAD = 0


def sample(*ids):
    """A sample whose first token is a masked prompt token, the rest trained."""
    return Sample(list(ids), [IGNORE_INDEX, *ids[1:]])


def unpack(row: PackedRow) -> list[tuple[list[int], list[int], list[int]]]:
    """The (input_ids, labels, position_ids) pieces of a row, split where position ids restart; pad excluded."""
    end = len(row.input_ids) - row.n_pad
    starts = [i for i in range(end) if row.position_ids[i] == 0] + [end]
    return [(row.input_ids[a:b], row.labels[a:b], row.position_ids[a:b]) for a, b in pairwise(starts)]


def test_hand_example_best_fit_decreasing_rows():
    rows = list(pack([sample(11, 12, 13), sample(21, 22), sample(31, 32, 33, 34)], 5, PAD))
    assert rows == [
        PackedRow([11, 12, 13, 21, 22], [-100, 12, 13, -100, 22], [0, 1, 2, 0, 1], 0),
        PackedRow([31, 32, 33, 34, PAD], [-100, 32, 33, 34, -100], [0, 1, 2, 3, 0], 1),
    ]


def test_first_label_of_every_packed_sample_is_masked():
    trained_from_start = Sample([5, 6, 7], [5, 6, 7])  # e.g. a pretraining block: label 5 has no predecessor
    (row,) = pack([trained_from_start, trained_from_start], 6, PAD)
    assert row.labels == [-100, 6, 7, -100, 6, 7]


@pytest.mark.parametrize(("buffer_size", "max_open"), [(4096, 256), (16, 2), (1, 1)])
def test_every_sample_appears_once_in_full_rows_with_restarting_positions(tokenizer, sft_spec, buffer_size, max_open):
    samples, _ = build_sft_samples(sft_spec, tokenizer, 256)
    rows = list(pack(samples, 256, tokenizer.pad_token_id, buffer_size=buffer_size, max_open=max_open))
    assert all(len(r.input_ids) == len(r.labels) == len(r.position_ids) == 256 for r in rows)
    pieces = [piece for row in rows for piece in unpack(row)]
    assert all(pos == list(range(len(ids))) for ids, _, pos in pieces)
    assert sorted((ids, labels) for ids, labels, _ in pieces) == sorted(
        (s.input_ids, [IGNORE_INDEX, *s.labels[1:]]) for s in samples
    )
    for row in rows:
        tail = slice(256 - row.n_pad, 256)
        assert row.input_ids[tail] == [tokenizer.pad_token_id] * row.n_pad
        assert set(row.labels[tail]) <= {IGNORE_INDEX} and row.position_ids[tail] == list(range(row.n_pad))


def test_padding_waste_on_the_bundled_data_at_1024_is_at_most_2_percent(tokenizer, sft_spec):
    samples, stats = build_sft_samples(sft_spec, tokenizer, 1024)
    rows = list(pack(samples, 1024, tokenizer.pad_token_id))
    assert padding_share(rows) <= 0.02
    assert len(rows) <= -(-stats.tokens // 1024) + 1  # at most one row more than a perfect packing


def test_a_sample_longer_than_the_row_is_refused():
    with pytest.raises(DataError, match="a sample of 4 tokens does not fit a packed row of 3"):
        list(pack([sample(1, 2, 3, 4)], 3, PAD))


def test_collate_and_padding_share():
    rows = list(pack([sample(11, 12, 13), sample(21, 22), sample(31, 32, 33, 34)], 5, PAD))
    batch = collate(rows)
    assert set(batch) == {"input_ids", "labels", "position_ids"}
    assert all(t.shape == (2, 5) and str(t.dtype) == "torch.int64" for t in batch.values())
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]
    assert padding_share(rows) == pytest.approx(1 / 10)
    assert padding_share([]) == 0.0


def test_unpacked_rows_hold_one_sample_each():
    rows = list(pad_rows([sample(11, 12, 13), sample(21, 22)], 4, PAD))
    assert rows == [
        PackedRow([11, 12, 13, PAD], [-100, 12, 13, -100], [0, 1, 2, 0], 1),
        PackedRow([21, 22, PAD, PAD], [-100, 22, -100, -100], [0, 1, 0, 1], 2),
    ]
