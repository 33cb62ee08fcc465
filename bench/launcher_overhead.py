"""What the launcher costs over a bare torchrun + DeepSpeed script: per-step time and command-to-first-step time.

    python bench/launcher_overhead.py [--steps 30] [--repeat 3]

Both train the demo (tiny LLaMA, LoRA, ZeRO-3, bf16, 2 CPU workers, micro 2, global 8) for the same number of
steps, alternating bare and launcher runs in this one run (the machine is shared and noisy: medians of --repeat
rounds). The launcher logs every step and checkpoints only at the end; the first-step time is measured from
starting the command to the first step's line on disk.
Targets: per-step ratio <= 1.05, first-step ratio <= 2.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _run(command: list[str], lines: Path, step_key: str) -> tuple[float, list[float]]:
    """Run ``command`` to the end; (seconds from start to the first step line, the per-step times)."""
    started = time.time()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = None
    while process.poll() is None:
        if first is None and lines.is_file() and lines.read_text().strip():
            first = time.time() - started
        time.sleep(0.05)
    if process.returncode != 0:
        raise SystemExit(f"{command[:4]} failed with exit code {process.returncode}")
    records = [json.loads(line) for line in lines.read_text().splitlines()]
    return first or time.time() - started, [r[step_key] for r in records if step_key in r]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "disabled")
    firsts: dict[str, list[float]] = {"bare": [], "launcher": []}
    steps: dict[str, list[float]] = {"bare": [], "launcher": []}
    for round_ in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            bare_out, run_dir = Path(tmp) / "bare.jsonl", Path(tmp) / "launcher"
            commands = {
                "bare": ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          str(HERE / "bare_deepspeed.py"), str(bare_out), str(args.steps)], bare_out),
                "launcher": ([sys.executable, "-m", "launcher", f"launcher.run_dir={run_dir}",
                              f"train.max_steps={args.steps}", "monitor.log_every=1", "monitor=off",
                              f"train.save_every={args.steps}", "train.eval_every=0", "data.eval_samples=0"],
                             run_dir / "metrics.jsonl"),
            }
            for name, (command, lines) in commands.items():
                first, step_times = _run(command, lines, "step_time_s")
                firsts[name].append(first)
                steps[name] += step_times[len(step_times) // 3:]  # past the warm-up steps
            print(f"round {round_ + 1}: first step bare {firsts['bare'][-1]:.1f} s, launcher "
                  f"{firsts['launcher'][-1]:.1f} s", flush=True)
    bare, ours = (statistics.median(steps[k]) for k in ("bare", "launcher"))
    bare_first, ours_first = (statistics.median(firsts[k]) for k in ("bare", "launcher"))
    print(f"{'':<28}{'bare torchrun':>14}{'launcher':>10}{'ratio':>8}  target")
    print(f"{'median step time (s)':<28}{bare:>14.3f}{ours:>10.3f}{ours / bare:>8.2f}  <= 1.05")
    print(f"{'command to first step (s)':<28}{bare_first:>14.1f}{ours_first:>10.1f}{ours_first / bare_first:>8.2f}"
          "  <= 2")


if __name__ == "__main__":
    main()
