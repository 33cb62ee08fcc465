"""run_dir/loss.png: train and eval loss against step, drawn from metrics.jsonl (also a partial one)."""

from pathlib import Path

from belle.monitor.metrics import read_metrics
from belle.rundir import LOSS_PLOT, replacing


def _series(records: list[dict], key: str) -> tuple[list, list]:
    points = [(r["step"], r[key]) for r in records if r.get(key) is not None and "step" in r]
    return [s for s, _ in points], [v for _, v in points]


def plot_loss(run_dir: Path) -> Path | None:
    """Draw ``run_dir/loss.png`` (written whole) and return its path; None when no record holds a loss."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    curves = [(label, *_series(records, key)) for label, key in (("train", "loss"), ("eval", "eval_loss"))]
    curves = [c for c in curves if c[1]]
    if not curves:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4), tight_layout=True)
    ax = fig.add_subplot()
    for label, steps, values in curves:
        ax.plot(steps, values, label=label, marker="o" if len(steps) < 30 else None)
    ax.set(xlabel="step", ylabel="loss", title=run_dir.name)
    ax.grid(alpha=0.3)
    ax.legend()
    path = run_dir / LOSS_PLOT
    with replacing(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path
