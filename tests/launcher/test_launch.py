"""One attempt of a Slurm job's run (``python -m launcher.backends.slurm.driver``), as far as it goes without Slurm."""

import json
import subprocess
import sys

from launcher.app import run


def test_a_ray_that_never_comes_up_fails_the_attempt_with_a_summary(cfg, tmp_path):
    run_dir = tmp_path / "run"
    run(cfg("cluster=slurm", "launcher.dry_run=true", f"launcher.run_dir={run_dir}"))
    done = subprocess.run(
        [sys.executable, "-m", "launcher.backends.slurm.driver", str(run_dir),
         "--slurm-info", str(run_dir / "slurm" / "none.json"), "--timeout", "0.5", "--nodes", "node1"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [
        f"error: the Ray head wrote no address to {run_dir / 'slurm' / 'none.json'} within 0.5 s"
    ]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "wrote no address" in summary["error"]
