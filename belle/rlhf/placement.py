"""PPO's placement: which logical node and slot each role's ranks take, and the memory each GPU needs; the sizes of
the models placed (``ModelSize``) and the dry run's printout. belle.rlhf.planner finds it.

A pool is the set of roles sharing ``roles.<role>.pool``: one process per GPU hosts all of them.
"""

from dataclasses import dataclass
from pathlib import PurePath

from belle.config import LoraConfig, ModelConfig
from belle.monitor.progress import short_count


@dataclass(frozen=True)
class ModelSize:
    """The numbers of one role's model the plan needs."""

    model: ModelConfig
    """Architecture numbers (activations, logits, KV cache)."""
    params: int
    """P: every parameter."""
    largest_module: int
    """L: parameters of the largest single module (the embedding for LLaMA), as DeepSpeed's estimator counts."""
    trainable: int
    """Parameters with gradients and optimizer states when the role trains (LoRA: the adapters)."""
    score: bool = False
    """A score model (critic, reward model): one value per token, no vocabulary logits."""

    @classmethod
    def of(cls, model: ModelConfig, *, score: bool = False, lora: LoraConfig | None = None) -> "ModelSize":
        """Counted by belle.model.anatomy (meta device, cached per model); ``score`` swaps the LM head for the
        one-output score head."""
        from belle.model.anatomy import anatomy, lora_params

        parts = anatomy(model)
        tied = parts.matmul_params == parts.total_params
        params = parts.total_params
        if score:
            params += model.hidden_size - (0 if tied else parts.module_params["lm_head"])
        largest_linear = max(i * o for _, i, o in parts.linear_modules.values())
        adapters = None if lora is None else lora_params(parts, lora, model.name) + (model.hidden_size if score else 0)
        largest = max(model.vocab_size * model.hidden_size, largest_linear)
        return cls(model, params, largest, params if adapters is None else adapters, score)

    @property
    def label(self) -> str:
        """``llama_7b 6.74B``, ``llama_7b+score 6.61B (rm_7b)`` (the folder of model.path)."""
        folder = f" ({PurePath(self.model.path).name})" if self.model.path else ""
        return f"{self.model.name}{'+score' if self.score else ''} {short_count(self.params, 2)}{folder}"


@dataclass(frozen=True)
class Pool:
    """Roles sharing the same GPUs, one rank of each per GPU."""

    name: str
    roles: tuple[str, ...]
    workers: int
    ranks: tuple[tuple[int, int], ...]
    """(logical node, slot) of each rank, in rank order."""
    states: tuple[tuple[str, str, float], ...]
    """(role, kind, GiB) of each role's resident model states per GPU; kind is e.g. ``Z3-train``."""
    phases: tuple[tuple[str, float], ...]
    """(phase, GiB) of each phase's working set per GPU; phases run one after another, the largest counts."""
    overhead: float
    """GiB per GPU of CUDA context, NCCL buffers and fragmentation (0 on CPU workers)."""
    capacity: float | None
    """GiB per GPU the pool may use (a vLLM pool: its gpu_memory_utilization share); None on CPU workers."""

    @property
    def peak(self) -> tuple[str, float]:
        """The phase with the largest working set."""
        return max(self.phases, key=lambda phase: phase[1])

    @property
    def total(self) -> float:
        """GiB per GPU: resident states + the largest phase + overhead."""
        return sum(gib for _, _, gib in self.states) + self.peak[1] + self.overhead

    @property
    def fits(self) -> bool | None:
        """Whether ``total`` fits the capacity; None on CPU workers."""
        return None if self.capacity is None else self.total <= self.capacity


@dataclass(frozen=True)
class Placement:
    """Where every rank of every PPO role runs, and what each GPU holds."""

    layout: str
    """The layout placed (roles.layout=auto resolved)."""
    requested: str
    """roles.layout as set."""
    device: str
    """The GPU type, or ``cpu``."""
    nodes: int
    slots_per_node: int
    pools: tuple[Pool, ...]
    models: tuple[tuple[str, str], ...]
    """(role, model label) of each present role but the rollout."""
    rollout: str
    """How responses are generated, e.g. ``hf in pool A``."""
    others: tuple[tuple[str, str], ...]
    """(layout, GiB per GPU or why it cannot be placed) of the other named layouts."""

    @property
    def fits(self) -> bool | None:
        """Whether every pool fits its GPUs' memory; None on CPU workers."""
        fits = [p.fits for p in self.pools]
        return None if None in fits else all(fits)

    def pool_of(self, role: str) -> Pool:
        """The pool hosting ``role``."""
        return next(p for p in self.pools if role in p.roles)

    def to_json(self) -> dict:
        """A JSON-ready dict for plan.json (GiB rounded to 0.01)."""
        return {
            "layout": self.layout, "requested": self.requested, "device": self.device, "nodes": self.nodes,
            "slots_per_node": self.slots_per_node, "fits": self.fits, "models": dict(self.models),
            "rollout": self.rollout, "others": dict(self.others),
            "pools": [
                {
                    "name": p.name, "roles": list(p.roles), "workers": p.workers,
                    "ranks": [list(rank) for rank in p.ranks],
                    "states_gib": [{"role": r, "kind": k, "gib": round(g, 2)} for r, k, g in p.states],
                    "phases_gib": {name: round(g, 2) for name, g in p.phases},
                    "overhead_gib": p.overhead, "total_gib": round(p.total, 2), "capacity_gib": p.capacity,
                    "fits": p.fits,
                }
                for p in self.pools
            ],
        }


def placement_lines(placement: Placement) -> list[str]:
    """The dry run's lines: the layout (and the other layouts' needs), the models, one line per pool, idle slots."""
    p = placement
    head = p.layout if p.requested == p.layout else f"{p.requested} -> {p.layout}"
    others = "; ".join(f"{name}: {text}" for name, text in p.others)
    groups: dict[str, list[str]] = {}
    for role, label in p.models:
        groups.setdefault(label, []).append(role)
    models = " | ".join(f"{'+'.join(rs)} {label}" for label, rs in groups.items())
    lines = [
        f"  roles      {head}" + (f"  ({others})" if others else ""),
        f"  models     {models} | rollout {p.rollout}",
    ]
    for pool in p.pools:
        parts = [f"{role} {pool.workers} {kind} {gib:.2f}" for role, kind, gib in pool.states]
        parts.append(f"{pool.peak[0]} {pool.peak[1]:.2f}")
        if pool.overhead:
            parts.append(f"{pool.overhead:g}")
        fits = {True: "fits", False: "DOES NOT FIT", None: "CPU workers"}[pool.fits]
        capacity = f" of {pool.capacity:g}" if pool.capacity is not None else ""
        lines.append(
            f"  {'pool ' + pool.name:<11}{_spans(pool.ranks)}  {' + '.join(parts)} = {pool.total:.1f}{capacity} GiB "
            f"({fits})"
        )
    used = {rank for pool in p.pools for rank in pool.ranks}
    idle = [(n, s) for n in range(p.nodes) for s in range(p.slots_per_node) if (n, s) not in used]
    if idle:
        lines.append(f"  idle       {_spans(tuple(idle))}")
    return lines


def _spans(ranks: tuple[tuple[int, int], ...]) -> str:
    """``n0-1:0-7 n2:0-3``: runs of consecutive nodes holding the same contiguous slots."""
    slots: dict[int, list[int]] = {}
    for node, slot in ranks:
        slots.setdefault(node, []).append(slot)
    runs: list[list[int]] = []  # [first node, last node, first slot, last slot]
    for node, held in slots.items():
        if runs and runs[-1][1] == node - 1 and runs[-1][2:] == [held[0], held[-1]]:
            runs[-1][1] = node
        else:
            runs.append([node, node, held[0], held[-1]])
    return " ".join(
        f"n{a}{f'-{b}' if b > a else ''}:{lo}{f'-{hi}' if hi > lo else ''}" for a, b, lo, hi in runs
    )
