"""Every experiment in conf/exp composes, validates and plans (new experiments are covered automatically)."""

import json
from pathlib import Path

import pytest

CONF = Path(__file__).resolve().parents[2] / "conf"

EXPERIMENTS = sorted(p.stem for p in (CONF / "exp").glob("*.yaml"))


def test_the_paper_rows_are_all_there():
    paper = {"lora_0.6m", "lora_2m", "lora_4m", "lora_2m_13b", "ft_0.6m", "ft_2m", "ft_2m_lora_math", "ft_2m_ft_math"}
    assert paper | {"pretrain_7b", "demo"} <= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_file_opens_with_its_command(name):
    lines = (CONF / "exp" / f"{name}.yaml").read_text().splitlines()
    assert lines[0] == "# @package _global_"
    assert lines[1].startswith(f"# python -m launcher +exp={name}")
    assert lines[2].startswith("# ") and len(lines[2]) > 20  # what it reproduces


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_plans(name, cfg, tmp_path):
    from launcher.app import run

    run_dir = run(cfg(f"+exp={name}", "launcher.dry_run=true", f"launcher.run_dir={tmp_path}"))
    plan = json.loads((run_dir / "plan.json").read_text())
    assert plan["experiment"] == name
    assert plan["model"]["params_total"] > plan["model"]["params_trainable"] > 0 or plan["method"] != "sft+lora"
    if plan["recipe"]["trains"] is None:  # it answers and scores: no batch, no optimizer steps
        assert plan["generate"]["max_new_tokens"] > 0 and plan["model"]["params_trainable"] == 0
        return
    if name.startswith("ppo"):  # each role has its own batch and memory: the placement holds them
        assert "batch" not in plan and "memory_gib_per_gpu" not in plan and plan["placement"]["lines"]
    else:
        assert plan["batch"]["micro"] * plan["cluster"]["world_size"] * plan["batch"]["grad_accumulation"] == (
            plan["batch"]["global"]
        )
    assert plan["schedule"]["total_steps"] > 0
    assert (run_dir / "config.yaml").is_file()


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_smoke_composes_on_tiny_model(name, job):
    tiny = job(f"+exp={name}", "+smoke=tiny")
    assert tiny.model.name == "tiny_llama" and tiny.model.path is None
    assert not tiny.cluster.use_gpu
    assert "/samples/" in tiny.data.path


# Paper rows: (experiment, trainable parameters that follow from r=8 on q,k,v,gate,up,down, hours/epoch).
LORA_ROWS = [("lora_2m", 17_891_328, 7), ("lora_2m_13b", 28_016_640, 10)]


@pytest.mark.parametrize("name,trainable,hours", LORA_ROWS)
def test_lora_plan_matches_paper_settings(name, trainable, hours, cfg, tmp_path):
    from launcher.app import run

    plan = json.loads((run(cfg(f"+exp={name}", "launcher.dry_run=true", f"launcher.run_dir={tmp_path}"))
                       / "plan.json").read_text())
    assert plan["model"]["params_trainable"] == trainable
    assert plan["reference"]["hours_per_epoch"] == hours
    assert plan["batch"]["global"] == 128 and plan["strategy"]["precision"] == "fp16"
    assert plan["schedule"]["warmup_steps"] == 100 and plan["schedule"]["lr"] == 2e-4
    assert plan["memory_gib_per_gpu"]["fits"] is True


def test_paper_hyperparameters(job):
    lora, ft, math = job("+exp=lora_2m"), job("+exp=ft_2m"), job("+exp=ft_2m_ft_math")
    assert (lora.method.lora.r, lora.method.lora.alpha, lora.method.lora.dropout) == (8, 16, 0.05)
    assert "o_proj" not in lora.method.lora.target_modules and lora.train.epochs == 4
    assert (ft.optim.lr, ft.optim.warmup_ratio, ft.strategy.global_batch, ft.train.epochs) == (5e-6, 0.03, 32, 3)
    assert ft.strategy.precision == "bf16" and ft.method.lora is None and ft.data.max_length == 1024
    assert (math.optim.lr, math.train.epochs, math.model.path) == (5e-7, 2, str(Path.cwd() / "runs/ft_2m/export"))


DATA = sorted(p.stem for p in (CONF / "data").glob("*.yaml"))


@pytest.mark.parametrize("name", DATA)
def test_the_smoke_data_of_every_data_group_has_its_format(name, cfg):
    """+smoke=tiny swaps in data.smoke_path: bundled records of the group's own format (pairs for RM and DPO;
    prompts, or instruction records whose answers are references, for PPO; an eval set for method=eval)."""
    from belle.data.conversation import record_kind
    from belle.data.records import iter_records

    data = cfg(f"data={name}").data
    if data.format == "eval":
        from belle.data.eval_set import read_eval_set

        assert read_eval_set(data.smoke_path)
        return
    kinds = {record_kind(record) for record, _ in iter_records(data.smoke_path)}
    expected = {"sft": {"instruction", "conversations"}, "pretrain": {"text"}, "preference": {"preference"},
                "dpo": {"dpo"}, "prompt": {"text", "instruction", "conversations"}}[data.format]
    assert kinds <= expected, (name, kinds)


def test_ppo_7b_plans_the_briefs_placement_on_two_a100_80gb_nodes(cfg, tmp_path):
    """PPO of LLaMA-7B on 2 x 8 A100-80GB: auto picks colocate_all at 40.0 GiB/GPU (pairs 39.2, separate 37.2)."""
    from launcher.app import run

    plan = json.loads((run(cfg("+exp=ppo_7b", "launcher.dry_run=true", f"launcher.run_dir={tmp_path}"))
                       / "plan.json").read_text())
    placement = plan["placement"]
    assert "auto -> colocate_all  (pairs: 39.2 GiB/GPU; separate: 37.2 GiB/GPU)" in placement["lines"][0]
    assert any("= 40.0 of 80 GiB (fits)" in line for line in placement["lines"])
    assert plan["recipe"]["step"].startswith("512 prompts x 1, <= 512+512 tokens; mini-batch 64 x 2 epochs")
    assert any("method.ppo.reward_model=" in w for w in plan["warnings"])  # named at launch, as the command shows
