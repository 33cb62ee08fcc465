"""BELLE data: records → turns → template ids and labels → packed rows (or pretraining blocks)."""

from belle.data.conversation import record_kind, to_turns, validate_dpo, validate_preference, validate_text
from belle.data.dataset import DatasetStats, build_pretrain_blocks, build_sft_samples
from belle.data.packing import PackedRow, collate, pack, padding_share
from belle.data.pretrain import pretrain_blocks
from belle.data.records import SAMPLES_DIR, DataError, iter_records, resolve_paths
from belle.data.template import IGNORE_INDEX, Sample, encode, encode_many

# fmt: off
__all__ = [
    "IGNORE_INDEX", "SAMPLES_DIR", "DataError", "DatasetStats", "PackedRow", "Sample", "build_pretrain_blocks",
    "build_sft_samples", "collate", "encode", "encode_many", "iter_records", "pack", "padding_share",
    "pretrain_blocks", "record_kind", "resolve_paths", "to_turns", "validate_dpo", "validate_preference",
    "validate_text",
]
# fmt: on
