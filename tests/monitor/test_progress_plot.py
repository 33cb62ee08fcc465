"""The progress line and the loss plot."""

from belle.monitor.metrics import MetricsLog
from belle.monitor.plot import plot_loss
from belle.monitor.progress import Progress


def test_progress_line(capsys):
    now = [100.0]
    progress = Progress(total_steps=30, start_step=10, clock=lambda: now[0])
    now[0] += 0.5  # two steps since the (resumed) start at step 10
    progress.update({"step": 12, "loss": 7.91234, "eval_loss": 7.951, "tokens_per_s": 6512.0, "step_time_s": 0.31})
    assert capsys.readouterr().out == "step 12/30 | loss 7.912 | eval 7.95 | 6.5k tok/s | 0.31 s/step | ETA 0:00:04\n"
    assert progress.line({"step": 13}).startswith("step 13/30 | ETA")


def test_plot_loss(tmp_path):
    assert plot_loss(tmp_path) is None
    log = MetricsLog(tmp_path, resume_step=None)
    assert plot_loss(tmp_path) is None
    for step in range(1, 6):
        log.log({"step": step, "loss": 3.0 / step} | ({"eval_loss": 3.1 / step} if step % 2 == 0 else {}))
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "lo')  # partial file after a failure
    path = plot_loss(tmp_path)
    assert path == tmp_path / "loss.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss.png", "metrics.jsonl"]
