"""The recipe seam: every method has a recipe, found by method.name, that says how it runs and what it plans."""

from belle.config.method import METHODS
from belle.recipes import RECIPES, recipe


def test_every_method_has_a_recipe_of_a_kind_the_launcher_runs():
    from launcher.launch import BACKENDS

    assert set(RECIPES) == set(METHODS)
    for method in METHODS:
        module = recipe(method)
        assert module.KIND in BACKENDS and callable(module.train)
    assert recipe("ppo").KIND == "roles" and recipe("sft").KIND == "spmd"


def test_the_recipe_adds_its_lines_to_the_plan(job):
    assert recipe("sft").plan(job("launcher.dry_run=true"))["trains"] == "the answers (prompts masked)"
    pretrain = job("method=pretrain", "data=sample_pretrain", "launcher.dry_run=true")
    assert recipe("pretrain").plan(pretrain) == {
        "name": "sft", "kind": "spmd", "trains": "every token of raw-text blocks", "rows": "packed",
    }


def test_the_pair_recipes_say_what_they_train(job):
    rm = recipe("rm").plan(job("method=rm", "data=sample_preference", "launcher.dry_run=true"))
    assert rm["name"] == "rm" and "-logsigmoid(r_chosen - r_rejected - margin)" in rm["trains"]
    dpo = recipe("dpo").plan(job("method=dpo_lora", "data=sample_dpo", "launcher.dry_run=true"))
    assert dpo["reference"] == "adapters_off" and "beta 0.1" in dpo["trains"]
