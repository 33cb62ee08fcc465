"""One recipe per training method, each read top to bottom, looked up by ``method.name``.

A recipe module declares how it runs and what it adds to the plan:

    KIND                    "spmd": one worker group, every rank runs ``train(job, run_dir)`` in an initialised
                            torch.distributed world (sft, pretrain, rm, dpo; launcher.backends.spmd);
                            "roles": ``train(job, run_dir, roles)`` runs in the driver and calls role pools placed
                            on the cluster (ppo; launcher.backends.ray_roles)
    plan(job) -> dict       its own lines in plan.json (under "recipe")
"""

from importlib import import_module
from types import ModuleType

RECIPES = {
    "sft": "belle.recipes.sft", "pretrain": "belle.recipes.sft", "rm": "belle.recipes.rm", "dpo": "belle.recipes.dpo",
    "ppo": "belle.recipes.ppo",
}
"""method.name → the module of its recipe (continued pretraining is the SFT recipe on {"text"} blocks)."""


def recipe(method: str) -> ModuleType:
    """The recipe module of ``method`` (a method.name; the config has checked it is one of RECIPES)."""
    return import_module(RECIPES[method])
