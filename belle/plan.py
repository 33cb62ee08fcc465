"""What a recipe adds to a job's plan: the shape every job kind fills in, so the launcher prints and stores any kind's
plan without knowing the kind."""

from dataclasses import dataclass, field


@dataclass
class RecipePlan:
    """A recipe's part of plan.json and of the plan on the console."""

    recipe: dict
    """plan.json "recipe": the recipe's name, its KIND, what it "trains" (None: nothing; then what it "produces")."""
    steps_per_epoch: int | None
    """Steps in one pass over the data (None: unknown before the data is read)."""
    total_steps: int | None
    """Steps the run takes (None: unknown)."""
    sections: dict = field(default_factory=dict)
    """More plan.json sections of its own (a worker group's batch, memory and DeepSpeed config; PPO's placement)."""
    lines: list[str] = field(default_factory=list)
    """Console lines, printed as given after the shared ones (model, cluster, strategy, data)."""
