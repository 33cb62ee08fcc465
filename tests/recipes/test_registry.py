"""The recipe face: every job kind declares all of it, and the launcher reaches a recipe through nothing else."""

import re
import subprocess
from pathlib import Path

from belle.config.method import DATA_FORMATS, METHODS
from belle.data.facts import DataFacts
from belle.recipes import DRIVER_FACE, FACE, RECIPES, recipe

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS = ("check", "data_facts", "plan", "prepare", "preview", "train", "follow_up")


def test_every_method_has_a_recipe_with_the_whole_face_of_a_kind_the_launcher_runs():
    from launcher.launch import BACKENDS

    assert set(RECIPES) == set(METHODS)
    for method in METHODS:
        module = recipe(method)
        face = FACE + (DRIVER_FACE if module.KIND == "driver" else ())
        missing = [name for name in face if not hasattr(module, name)]
        assert not missing, f"{module.__name__} lacks {missing} of the recipe face"
        assert module.KIND in BACKENDS, module.__name__
        assert set(DATA_FORMATS[method]) <= set(module.FORMATS), f"{module.__name__} misses a data.format of {method}"
        assert all(callable(getattr(module, name)) for name in FUNCTIONS), module.__name__
        assert isinstance(module.SUMMARY, dict) and module.SUMMARY, module.__name__
    assert recipe("ppo").KIND == "driver" and recipe("sft").KIND == "spmd"


def test_the_launcher_names_no_method():
    found = subprocess.run(
        ["grep", "-rnE", r"method\.(ppo|dpo|rm)|== \"(sft|rm|dpo|ppo|pretrain)\"", "launcher/", "--include=*.py"],
        cwd=ROOT, capture_output=True, text=True,
    ).stdout
    assert found == "", f"the launcher names a method instead of asking its recipe's face:\n{found}"
    assert not re.search(r"belle\.recipes\.(sft|rm|dpo|ppo)\b", _launcher_source()), "the launcher imports a recipe"


def _launcher_source() -> str:
    return "\n".join(path.read_text() for path in (ROOT / "launcher").rglob("*.py"))


def test_the_recipe_adds_its_part_to_the_plan(job):
    facts = DataFacts(4200, 30.5, "test")
    sft = recipe("sft").plan(job("launcher.dry_run=true"), facts, [])
    assert sft.recipe["trains"] == "the answers (prompts masked)" and sft.total_steps == 30
    assert {"batch", "memory_gib_per_gpu", "deepspeed"} <= set(sft.sections)
    assert [line.split()[0] for line in sft.lines] == ["batch", "memory/GPU", "schedule", "time"]
    pretrain_job = job("method=pretrain", "data=sample_pretrain", "launcher.dry_run=true")
    pretrain = recipe("pretrain").plan(pretrain_job, facts, [])
    assert pretrain.recipe == {
        "name": "sft", "kind": "spmd", "trains": "every token of raw-text blocks", "rows": "packed",
    }


def test_the_pair_recipes_say_what_they_train(job):
    facts = DataFacts(100, 60.0, "test")
    rm = recipe("rm").plan(job("method=rm", "data=sample_preference", "launcher.dry_run=true"), facts, [])
    assert rm.recipe["name"] == "rm" and "-logsigmoid(r_chosen - r_rejected - margin)" in rm.recipe["trains"]
    dpo = recipe("dpo").plan(job("method=dpo_lora", "data=sample_dpo", "launcher.dry_run=true"), facts, [])
    assert dpo.recipe["reference"] == "adapters_off" and "beta 0.1" in dpo.recipe["trains"]
    assert rm.sections["memory_gib_per_gpu"]["logits"] < dpo.sections["memory_gib_per_gpu"]["logits"]  # 1 output
