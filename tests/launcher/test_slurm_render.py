"""The sbatch script rendered for cluster=slurm: every value typed by a user is inert, no secret is written."""

import os
import re
import subprocess

import pytest

from launcher.backends.slurm.sbatch import render

NASTY = """x"; $(touch {0}/pwned) `touch {0}/pwned2` 'q"""


@pytest.fixture
def slurm_job(job):
    return lambda *overrides: job("cluster=slurm", "cluster.nodes=2", "cluster.cpu_workers_per_node=1", *overrides)


def _shell_value(script: str, name: str, tmp_path) -> str:
    """What bash makes of the script's ``NAME=…`` line."""
    line = next(line for line in script.splitlines() if line.startswith(f"{name}="))
    return subprocess.run(["bash", "-c", f'{line}\nprintf %s "${name}"'], capture_output=True, text=True,
                          cwd=tmp_path, check=True).stdout


def test_values_with_quotes_and_substitutions_stay_inert(slurm_job, tmp_path):
    run_dir = tmp_path / NASTY.format(tmp_path).replace("/", "_")
    job = slurm_job("cluster.srun_args=['--container-image=/img/a b.sqsh']")
    job.launcher.name = NASTY.format(tmp_path) + f"\ntouch {tmp_path}/pwned4"  # a line break, too
    script = render(job, run_dir)

    assert _shell_value(script, "RUN_DIR", tmp_path) == str(run_dir)
    assert not list(tmp_path.glob("pwned*")), "a substitution ran"
    assert re.search(r"^#SBATCH --job-name=[A-Za-z0-9_.-]+$", script, re.M)
    assert not [line for line in script.splitlines() if "pwned4" in line and not line.startswith("#")]
    sbatch_chdir = next(line for line in script.splitlines() if line.startswith("#SBATCH --chdir="))
    assert sbatch_chdir.endswith('"') and '\\"' in sbatch_chdir  # sbatch's own quoting: " escaped inside "…"
    assert "'--container-image=/img/a b.sqsh'" in script
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def test_a_run_dir_slurm_would_misread_is_refused_before_anything_is_written(cli, tmp_path):
    out = cli("cluster=slurm", "launcher.dry_run=true", f"launcher.run_dir={tmp_path / 'run%j'}")
    assert out.returncode == 2 and "has a % or a line break" in out.stderr, out.stderr
    assert not (tmp_path / "run%j").exists()


def test_secrets_from_the_environment_are_not_written(slurm_job, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "wandb-secret-1234567890")
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token_0987654321")
    script = render(slurm_job(), tmp_path / "run")
    assert "wandb-secret" not in script and "hf_secret" not in script


def test_every_option_comes_from_the_config(slurm_job, tmp_path):
    script = render(slurm_job(
        "cluster.partition=gpu", "cluster.account=proj-1", "cluster.qos=high", "cluster.constraint='a100&ib'",
        "cluster.time=1-12:00:00", "cluster.signal_delay_s=600", "cluster.max_requeues=5",
        "cluster.sbatch_extra=['--exclusive','--mem=0']", "cluster.setup=['module load cuda/12.4']",
        "cluster.cpus_per_node=16", "cluster.ray_join_timeout_s=90",
    ), tmp_path / "run")
    for expected in ("--partition=gpu", "--account=proj-1", "--qos=high", "--constraint=a100&ib",
                     "--time=1-12:00:00", "--signal=B:USR1@600", "#SBATCH --exclusive", "#SBATCH --mem=0",
                     "\nmodule load cuda/12.4\n", "--cpus-per-task=16", "--nodes=2", "< 5 ))", "--timeout 90"):
        assert expected in script, expected
    assert "--gpus-per-node" not in script


@pytest.mark.parametrize("override, message", [
    ("cluster.partition='gpu; rm -rf /'", "cluster.partition='gpu; rm -rf /' has characters"),
    ("cluster.time=4h", "cluster.time='4h' is not a Slurm time"),
    ("cluster.signal_delay_s=7200", "cluster.signal_delay_s=7200 must be > 0 and below cluster.time=01:00:00"),
    ("cluster.sbatch_extra=[exclusive]", "cluster.sbatch_extra entry 'exclusive' is not one option"),
    ("cluster.setup=['export HF_TOKEN=hf_secret456']", "cluster.setup sets HF_TOKEN to a literal value"),
    ("+cluster.env.WANDB_API_KEY=abc", "cluster.env.WANDB_API_KEY looks like a credential"),
])
def test_bad_slurm_settings_are_refused_before_anything_is_written(cli, tmp_path, override, message):
    out = cli("cluster=slurm", "cluster.time=01:00:00", override, f"launcher.run_dir={tmp_path / 'run'}")
    assert out.returncode == 2 and message in out.stderr and out.stderr.count("\n") == 1, out.stderr
    assert not (tmp_path / "run").exists() and "secret456" not in out.stdout + out.stderr


def test_dry_run_renders_without_submitting(cli, tmp_path):
    out = cli("cluster=slurm", "launcher.dry_run=true", f"launcher.run_dir={tmp_path / 'run'}")
    assert out.returncode == 0, out.stderr
    script = tmp_path / "run" / "slurm" / "job.sbatch"
    assert "sbatch script (not submitted)" in out.stdout and script.read_text() in out.stdout
    assert "#SBATCH --nodes=1" in script.read_text()


def test_gpu_job_asks_for_gpus_one_way_and_the_nodes_memory(slurm_job, tmp_path):
    """Slurm >= 26.05 refuses a step given --gres=gpu besides the job's (inherited) --gpus-per-node; a GPU job takes
    each node's memory (--mem=0) and the node's CPU share per worker."""
    script = render(slurm_job("cluster.gpus_per_node=8", "strategy.precision=bf16", "cluster.cpus_per_node=96"),
                    tmp_path / "run")
    assert "--gres" not in script
    assert "#SBATCH --gpus-per-node=8\n#SBATCH --mem=0\n" in script
    srun = next(line for line in script.splitlines() if line.startswith("SRUN=("))
    assert "--gpus-per-node=8" in srun and "--cpus-per-task=96" in srun
    assert "--cpus 96 --gpus 8" in script  # each node's Ray offers 8 workers x 12 cores


def test_nccl_settings_reach_every_worker(job, monkeypatch):
    monkeypatch.setenv("NCCL_IB_HCA", "mlx5")
    monkeypatch.setenv("TORCH_NCCL_BLOCKING_WAIT", "1")
    monkeypatch.setenv("NCCLX_UNRELATED", "x")
    cluster = job("cluster.gpus_per_node=8", "+cluster.env.NCCL_SOCKET_IFNAME=ib0",
                  "+cluster.env.NCCL_IB_HCA=mlx5_0").cluster
    assert cluster.worker_env(os.environ) == {
        "NCCL_IB_HCA": "mlx5_0", "TORCH_NCCL_BLOCKING_WAIT": "1", "NCCL_SOCKET_IFNAME": "ib0",
    }


@pytest.mark.parametrize("setup, number, code, shown", [
    (["export TOKENIZERS_PARALLELISM=false", "module load cuda/12"], 2, 127, "module load cuda/12"),
    (["source /nope/bin/activate"], 1, 1, "source /nope/bin/activate"),
    (["true", "false && true"], 2, 1, "false && true"),
    (["""echo "50% \\\\ it's"; false"""], 1, 1, """echo "50% \\\\ it's"; false"""),
])
def test_a_failing_setup_line_ends_the_script_naming_it(slurm_job, tmp_path, setup, number, code, shown):
    """The rendered script run by bash (srun and scontrol stubbed): the first setup line whose status is not 0 ends
    it with exit code 1 before any Slurm step, in the log and in summary.json."""
    import json

    stubs, run_dir = tmp_path / "bin", tmp_path / "run"
    stubs.mkdir()
    run_dir.mkdir()
    for tool in ("srun", "scontrol"):
        (stubs / tool).write_text(f"#!/bin/sh\necho {tool} >> {tmp_path}/called\n")
        (stubs / tool).chmod(0o755)
    job = slurm_job()
    job.cluster.setup = setup
    env = {"PATH": f"{stubs}:/usr/bin:/bin", "HOME": str(tmp_path), "SLURM_JOB_ID": "7"}
    done = subprocess.run(["bash", "-c", render(job, run_dir)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"=== cluster.setup line {number} failed with exit code {code}: {shown}\n" in done.stdout
    assert not (tmp_path / "called").exists(), "a Slurm step ran after the failing line"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"] == (
        f"cluster.setup line {number} failed with exit code {code}: {shown}: fix the line or remove it from "
        "cluster.setup")
