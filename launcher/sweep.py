"""Hydra sweeps (``python -m launcher -m …``): every point gets its own run directory under the sweep's, the sweep's
W&B group, and a line in ``sweep.json`` (point → overrides → Slurm job id → run directory → status).

    <launcher.run_dir>/sweep.json
    <launcher.run_dir>/<point number>/   the point's run directory (config.yaml, checkpoints, summary.json, …)

Running the same sweep again reuses the same directories, so finished points are skipped and the others resume.
"""

import json
from dataclasses import dataclass, replace
from pathlib import Path

from belle.config import JobConfig
from belle.rundir import SWEEP, write_atomic


@dataclass(frozen=True)
class Point:
    number: int
    """Hydra's job number of this point."""
    overrides: list[str]
    """The overrides that make this point."""

    def place(self, job: JobConfig, sweep_dir: Path) -> JobConfig:
        """The point's job: its run in ``sweep_dir/<number>``, named ``<sweep>-<number>`` (the Slurm job, the W&B run),
        in the sweep's W&B group (unless one is set)."""
        name, directory = f"{sweep_dir.name}-{self.number}", sweep_dir / str(self.number)
        launcher = replace(job.launcher, run_dir=str(directory), name=name)
        monitor = replace(job.monitor, wandb_group=job.monitor.wandb_group or sweep_dir.name)
        return replace(job, launcher=launcher, monitor=monitor)


def current_point() -> Point | None:
    """The sweep point being composed, or None outside a sweep."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    hydra = HydraConfig.get()
    return Point(int(hydra.job.num), list(hydra.overrides.task))


def record_point(point: Point, run_dir: Path, status: str, job_id: str | None = None) -> None:
    """Add or update the point's line in its sweep's sweep.json (written whole), beside the point's ``run_dir``."""
    path = run_dir.parent / SWEEP
    sweep = json.loads(path.read_text()) if path.is_file() else {"sweep": run_dir.parent.name, "points": []}
    points = {p["point"]: p for p in sweep["points"]}
    points[point.number] = {"point": point.number, "overrides": point.overrides, "job_id": job_id,
                            "run_dir": str(run_dir), "status": status}
    sweep["points"] = [points[n] for n in sorted(points)]
    write_atomic(path, json.dumps(sweep, indent=2, ensure_ascii=False) + "\n")


def no_points_message(args: list[str]) -> str:
    """The refusal of a sweep whose overrides ``args`` expand to no point, naming an empty one (``range(0)``)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    empty = []
    for override in OverridesParser.create().parse_overrides([a for a in args if "=" in a and not a.startswith("-")]):
        try:
            if override.is_sweep_override() and not list(override.sweep_string_iterator()):
                empty.append(override.input_line)
        except HydraException:  # glob(…) of a config group: only Hydra's config loader can expand it
            continue
    named = f": {', '.join(empty)} gives no value" if empty else ""
    return (f"the sweep expands to no point{named}: give every swept key at least one value, e.g. "
            "optim.lr=1e-4,2e-4 or train.max_steps=range(10,30,10)")
