"""metrics.jsonl (rank 0, one JSON object per logged step) and the per-step throughput numbers that go in it."""

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

METRICS = "metrics.jsonl"


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temp file next to ``path`` to write; it replaces ``path`` in one rename when the block succeeds, so readers
    see the old file or the whole new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def read_metrics(run_dir: Path) -> list[dict]:
    """The records of ``run_dir/metrics.jsonl``; a line cut short by a crash (the last one) is skipped."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class MetricsLog:
    """Appends records to ``run_dir/metrics.jsonl``. A job that starts at ``resume_step`` (None: from scratch) first
    drops the lines of later steps, left by the attempt that failed after that checkpoint, so no step appears twice."""

    def __init__(self, run_dir: Path, resume_step: int | None):
        self.path = Path(run_dir) / METRICS
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = [r for r in read_metrics(run_dir) if resume_step is not None and r.get("step", 0) <= resume_step]
        if self.path.exists():
            with replacing(self.path) as tmp:
                tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")

    def log(self, record: dict) -> None:
        """Append one record, flushed to disk before returning."""
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())


PEAK_TFLOPS_BY_NAME = (
    (r"H100.*PCIe", 756.0), (r"H100.*NVL", 835.0), (r"\bG?H[12]00\b|\bH800\b", 989.0),
    (r"\bA[18]00\b", 312.0), (r"\bL40S\b", 362.0), (r"\bV100\b", 125.0),
)
"""Dense bf16 (V100: fp16) tensor peak by CUDA device name, most specific first: the PCIe and NVL H100s are slower
than the SXM part that H800, H200 and GH200 match."""


def gpu_peak_flops(name: str) -> float | None:
    """Dense 16-bit peak FLOP/s of a GPU from its CUDA name ("NVIDIA H100 80GB HBM3" → 989e12), None if unknown."""
    for pattern, tflops in PEAK_TFLOPS_BY_NAME:
        if re.search(pattern, name, re.IGNORECASE):
            return tflops * 1e12
    return None


def device_peak_flops(device) -> float | None:
    """Peak FLOP/s of one ``device``: known CUDA GPUs only (None on CPU, where there is no meaningful peak)."""
    import torch

    device = torch.device(device)
    return gpu_peak_flops(torch.cuda.get_device_name(device)) if device.type == "cuda" else None


def memory_gib(device) -> float:
    """Peak memory allocated by torch on a CUDA ``device``, else this process's resident memory, in GiB."""
    import torch

    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import psutil

    return psutil.Process().memory_info().rss / 2**30


@dataclass(frozen=True)
class StepMeter:
    """Throughput of one optimizer step over the whole job (tokens and samples summed over all ranks)."""

    flops_per_token: float
    """Model FLOPs per trained token (belle.monitor.flops.model_flops_per_token)."""
    world_size: int
    """Devices training together."""
    peak_flops: float | None
    """Peak FLOP/s of one device; None leaves MFU out."""
    device: str = "cpu"
    """This rank's device, for the memory reading."""

    @classmethod
    def on(cls, device, flops_per_token: float, world_size: int) -> "StepMeter":
        """A meter for ``device`` (a torch device or its name), with the peak looked up from the GPU's name."""
        return cls(flops_per_token, world_size, device_peak_flops(device), str(device))

    def measure(self, tokens: float, samples: int, step_time_s: float) -> dict:
        """tokens_per_s, samples_per_s, step_time_s, mfu (None when the peak is unknown) and memory_gib."""
        tokens_per_s = tokens / step_time_s
        peak = None if self.peak_flops is None else self.peak_flops * self.world_size
        return {
            "tokens_per_s": tokens_per_s,
            "samples_per_s": samples / step_time_s,
            "step_time_s": step_time_s,
            "mfu": None if peak is None else tokens_per_s * self.flops_per_token / peak,
            "memory_gib": memory_gib(self.device),
        }
