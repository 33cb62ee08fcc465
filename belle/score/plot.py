"""scores.png: an eval summary (belle.score.aggregate.summarize) drawn as one bar per category with its bootstrap
interval, scored/total under each bar, and the macro scores as horizontal lines."""

from __future__ import annotations

from pathlib import Path

from belle.rundir import replacing


def plot_scores(summary: dict, path: Path, title: str) -> Path:
    """Draw ``summary`` to the PNG ``path`` (written whole) and return the path. A category with nothing scored
    gets no bar, only its "0/n" label."""
    from matplotlib.figure import Figure

    path = Path(path)
    categories = summary["by_category"]
    names = list(categories)
    means = [c["mean"] or 0.0 for c in categories.values()]
    below = [c["mean"] - c["ci"][0] if c["ci"] else 0.0 for c in categories.values()]
    above = [c["ci"][1] - c["mean"] if c["ci"] else 0.0 for c in categories.values()]
    fig = Figure(figsize=(max(6.0, 0.8 * len(names) + 2), 4.5), tight_layout=True)
    ax = fig.add_subplot()
    positions = range(len(names))
    # a point estimate can fall just outside a percentile interval: never draw a negative error bar
    ax.bar(positions, means, yerr=[[max(0.0, v) for v in below], [max(0.0, v) for v in above]], capsize=3,
           color="tab:blue", alpha=0.8)
    ax.set_xticks(list(positions), [f"{name}\n{c['scored']}/{c['n']}" for name, c in categories.items()],
                  rotation=30, ha="right", fontsize=8)
    for metric, style in (("score", "-"), ("score_wo_others", "--")):
        headline = summary[metric]
        if headline["mean"] is not None:
            label = f"{metric} {headline['mean']:.3f}" + (" (partial)" if headline["note"] else "")
            ax.axhline(headline["mean"], color="tab:red", linestyle=style, linewidth=1, label=label)
    ax.set(ylim=(0, 1.05), ylabel="mean score (95% bootstrap interval)", title=title)
    ax.grid(axis="y", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize=8)
    with replacing(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


def plot_comparison(runs: list[tuple[str, dict]], path: Path) -> Path:
    """Runs' per-category means side by side (one bar group per category, one bar per run, the run's score in its
    legend label), written whole to the PNG ``path``. ``runs``: (label, scores as in eval/scores.json)."""
    from matplotlib.figure import Figure

    path = Path(path)
    categories = list(dict.fromkeys(c for _, scores in runs for c in scores["by_category"]))
    width = 0.8 / max(1, len(runs))
    fig = Figure(figsize=(max(7.0, 1.1 * len(categories) + 2), 4.5), tight_layout=True)
    ax = fig.add_subplot()
    for index, (label, scores) in enumerate(runs):
        means = [(scores["by_category"].get(c) or {}).get("mean") or 0.0 for c in categories]
        score = scores["score"]["mean"]
        ax.bar([i + (index - (len(runs) - 1) / 2) * width for i in range(len(categories))], means, width,
               label=f"{label} ({'?' if score is None else f'{score:.3f}'})")
    ax.set_xticks(range(len(categories)), categories, rotation=30, ha="right", fontsize=8)
    ax.set(ylim=(0, 1.05), ylabel="mean score per category", title="score per category (run: macro score)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper right", fontsize=7)
    with replacing(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path
