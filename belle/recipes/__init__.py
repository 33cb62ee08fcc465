"""One recipe per job kind, each read top to bottom, looked up by ``method.name``; the launcher reaches a recipe only
through its face, so a new kind adds a recipe module and a RECIPES line and edits no launcher file.

The face (every name in FACE, declared by every recipe module):

    KIND                          "spmd": one worker group, every rank runs ``train(job, run_dir)`` in an
                                  initialised torch.distributed world (launcher.backends.spmd); "driver":
                                  ``train(job, run_dir, roles)`` runs in the driver and calls role pools placed
                                  on the cluster (launcher.backends.pools)
    FORMATS                       the data.format values it reads
    check(job, command_line, run_dir)   refusals before anything is planned or written: keys it never reads
                                  (``command_line``: the keys set on it); unless a dry run, what it reads beyond
                                  model.path and data.path; for a launch, whether run_dir's checkpoint resumes
    data_facts(job, tokenizer)    what the plan knows of its data (belle.data.facts.DataFacts), or None: the
                                  launcher's shared reader tells (the prepared cache, or the first records)
    plan(job, facts, warnings)    its part of the plan (belle.plan.RecipePlan): plan.json sections, steps, console
                                  lines printed as given; ``warnings`` takes the plan's notes
    prepare(job, run_dir)         before any worker starts, once, on the launching machine (run_dir None:
                                  launcher.prepare, nothing runs after it)
    preview(job, tokenizer)       the first launcher.preview samples as the model sees them, their reference
                                  answers (or None) and what the preview shows (None: trained tokens marked)
    train                         the run itself (see KIND)
    follow_up(job, run_dir)       the job that runs after this one completes (a training job's eval section: the
                                  evaluation of its export), or None; called before anything starts too, so a
                                  follow-up that could not run is refused then
    SUMMARY                       summary.json key → the metrics.jsonl key whose last logged value it holds

A "driver" recipe adds ``phase_timeout(job) -> (seconds, key)``: the bound on each call to its pools and the key
that sets it.
"""

from importlib import import_module
from types import ModuleType

RECIPES = {
    "sft": "belle.recipes.sft", "pretrain": "belle.recipes.sft", "rm": "belle.recipes.rm", "dpo": "belle.recipes.dpo",
    "ppo": "belle.recipes.ppo", "generate": "belle.recipes.generate",
    "eval": "belle.recipes.eval",
}
"""method.name → the module of its recipe (continued pretraining is the SFT recipe on {"text"} blocks)."""
FACE = ("KIND", "FORMATS", "check", "data_facts", "plan", "prepare", "preview", "train", "follow_up", "SUMMARY")
"""The names every recipe module declares."""
DRIVER_FACE = ("phase_timeout",)
"""The names a "driver" recipe declares besides."""


def recipe(method: str) -> ModuleType:
    """The recipe module of ``method`` (a method.name; the config has checked it is one of RECIPES)."""
    return import_module(RECIPES[method])
