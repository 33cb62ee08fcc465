"""metrics.jsonl across a resume, and the per-step throughput numbers."""

import json
import os

import pytest

from belle.monitor.metrics import MetricsLog, StepMeter, gpu_peak_flops, read_metrics


def test_resume_drops_steps_after_the_checkpoint(tmp_path):
    log = MetricsLog(tmp_path, resume_step=None)
    for step in range(1, 7):
        log.log({"step": step, "loss": 1.0 / step})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "lo')  # the failed attempt died mid-line

    MetricsLog(tmp_path, resume_step=4).log({"step": 5, "loss": 0.5})

    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4, 5]
    assert all(json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines())
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]  # no temp file left behind


def test_truncation_is_all_or_nothing(tmp_path, monkeypatch):
    log = MetricsLog(tmp_path, resume_step=None)
    for step in range(1, 4):
        log.log({"step": step})
    before = (tmp_path / "metrics.jsonl").read_text()

    def crash(*_):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        MetricsLog(tmp_path, resume_step=1)
    assert (tmp_path / "metrics.jsonl").read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]


def test_a_fresh_start_keeps_no_old_lines(tmp_path):
    MetricsLog(tmp_path, resume_step=None).log({"step": 1})
    MetricsLog(tmp_path, resume_step=None)
    assert read_metrics(tmp_path) == []


def test_step_meter_on_cpu():
    numbers = StepMeter.on("cpu", flops_per_token=6e9, world_size=2).measure(tokens=4096, samples=8, step_time_s=0.5)
    assert numbers["tokens_per_s"] == 8192
    assert numbers["samples_per_s"] == 16
    assert numbers["step_time_s"] == 0.5
    assert numbers["mfu"] is None
    assert 0 < numbers["memory_gib"] < 1024


def test_mfu_from_the_gpu_name():
    peak = gpu_peak_flops("NVIDIA H100 80GB HBM3")
    assert peak == 989e12
    assert gpu_peak_flops("NVIDIA A100-SXM4-40GB") == 312e12
    for name, tflops in [("NVIDIA H100 PCIe", 756), ("NVIDIA H100 NVL", 835), ("NVIDIA H800", 989),
                         ("NVIDIA GH200 480GB", 989), ("NVIDIA H200", 989), ("Tesla V100-SXM2-32GB", 125)]:
        assert gpu_peak_flops(name) == tflops * 1e12, name
    assert gpu_peak_flops("Tesla T4") is None
    numbers = StepMeter(flops_per_token=6 * 7e9, world_size=8, peak_flops=peak).measure(8 * 3000 * 2, 64, 2.0)
    assert numbers["mfu"] == pytest.approx(8 * 3000 * 6 * 7e9 / (8 * 989e12))
