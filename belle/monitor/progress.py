"""One plain progress line per logged step (no carriage returns: Ray's log forwarding and Slurm logs keep lines)."""

import time
from collections.abc import Callable
from datetime import timedelta


def short_count(value: float, digits: int = 1) -> str:
    """850, 6.5k, 1.2M, 6.74B (``digits`` after the point once scaled)."""
    for factor, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.{digits}f}{suffix}"
    return f"{value:.0f}"


class Progress:
    """Prints ``step 12/30 | loss 7.912 | eval 7.95 | 6.5k tok/s | 0.31 s/step | ETA 0:00:05`` for rank 0; the ETA
    comes from the average step time since this job started at ``start_step`` (a resumed job counts from there)."""

    def __init__(self, total_steps: int, start_step: int = 0, clock: Callable[[], float] = time.monotonic):
        self.total_steps, self.start_step, self.clock = total_steps, start_step, clock
        self.started = clock()

    def line(self, record: dict) -> str:
        """The progress line for a metrics record (fields it lacks are left out)."""
        step = record["step"]
        parts = [f"step {step}/{self.total_steps}"]
        if record.get("loss") is not None:
            parts.append(f"loss {record['loss']:.3f}")
        if record.get("eval_loss") is not None:
            parts.append(f"eval {record['eval_loss']:.2f}")
        if record.get("tokens_per_s") is not None:
            parts.append(f"{short_count(record['tokens_per_s'])} tok/s")
        if record.get("step_time_s") is not None:
            parts.append(f"{record['step_time_s']:.2f} s/step")
        done = step - self.start_step
        if done > 0:
            eta = (self.clock() - self.started) / done * (self.total_steps - step)
            parts.append(f"ETA {timedelta(seconds=round(eta))}")
        return " | ".join(parts)

    def update(self, record: dict) -> None:
        """Print the line for ``record``."""
        print(self.line(record), flush=True)
