"""The floor plan of belle/ and launcher/, enforced by reading every import in the source.

Each module sits on a floor (FLOORS below, the one place the plan is written: adding a package is adding a row).
A module imports only from its own floor or lower ones: within its row (its package) freely, from another row of
its floor (belle/stop.py → belle/rundir.py) where no circle forms. No module imports a private ``_name`` of another
module, by ``from m import _name`` or by ``m._name`` (a package's private module, such as belle.config._checks, may
be imported: the rule is about names). No import circle exists, between modules or between rows. bench/ and tests/
stand outside the floors: they may import anything, and nothing on a floor imports them.

The test parses the source with ``ast`` and never imports it, so lazy imports inside functions and
``TYPE_CHECKING`` imports count like the others.
"""

import ast
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# fmt: off
FLOORS = {
    "belle/__init__.py":   0,  # the package's own (empty) module
    "belle/config/":       0,  # the typed config and its checks; hardware facts (GPU types, GiB, overheads)
    "belle/rundir.py":     1,  # every run-dir name and atomic write
    "belle/checkpoint.py": 1,
    "belle/stop.py":       1,
    "belle/heartbeat.py":  1,
    "belle/plan.py":       1,  # the shape of a recipe's part of the plan
    "belle/monitor/":      1,  # metrics, W&B, progress, the loss plot
    "belle/data/":         2,  # records → rows
    "belle/score/":        2,  # answers → scores: rules, the judge and its HTTP client, aggregation, plots
    "belle/model/":        3,  # tokenizer, model, heads, LoRA, memory, export, sampling (generate)
    "belle/strategy/":     4,  # DeepSpeed config, batch, schedule, the engines (trained and frozen)
    "belle/train/":        5,  # the training loop, a worker's start, engine state
    "belle/generation/":   5,  # answering prompts on a job's workers: dealing, batches, the shards and their merge
    "belle/rlhf/":         6,  # losses, experience, placement, roles, the PPO host and its state
    "belle/recipes/":      7,  # one control-flow file per method
    "launcher/":           8,  # compose, validate, plan, launch, backends
}
"""Path of a module or package folder (relative to the repo) → its floor. A module's row is the longest that
contains it."""
# fmt: on

OUTSIDE = ("bench", "tests")
"""Top-level folders outside the floors: they may import anything; nothing on a floor may import them."""


@dataclass(frozen=True)
class Edge:
    source: str  # importing module, dotted
    target: str  # imported module, dotted
    where: str  # file:line
    private: str | None = None  # a private name of target taken by source


def module_name(path: Path) -> str:
    """belle/data/__init__.py → belle.data; belle/data/pairs.py → belle.data.pairs."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> dict[str, Path]:
    """Dotted name → file of every module under belle/ and launcher/ (symlinked folders are not walked)."""
    found = {}
    for top in ("belle", "launcher"):
        for folder, _, files in os.walk(ROOT / top):
            for name in files:
                if name.endswith(".py"):
                    found[module_name(Path(folder) / name)] = Path(folder) / name
    return found


def row_of(path: Path) -> str | None:
    """The FLOORS row of a module's file: the longest that names it or a folder above it; None: no row."""
    rel = path.relative_to(ROOT).as_posix()
    rows = [row for row in FLOORS if rel == row or (row.endswith("/") and rel.startswith(row))]
    return max(rows, key=len, default=None)


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def edges(module: str, rel: str, text: str, modules: set[str]) -> list[Edge]:
    """Every import in ``text`` (the source of ``module``, file ``rel``) whose target is one of ours or in
    bench/tests, with the private names it takes."""
    tree = ast.parse(text, filename=rel)
    package = module if rel.endswith("__init__.py") else module.rpartition(".")[0]

    def ours(name: str) -> bool:
        return name.split(".")[0] in ("belle", "launcher", *OUTSIDE)

    found, bound = [], {}  # bound: local name → the module it names
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if ours(alias.name):
                    found.append(Edge(module, alias.name, f"{rel}:{node.lineno}"))
                    top = alias.name.split(".")[0]  # `import a.b` binds a, `import a.b as c` binds c
                    bound[alias.asname or top] = alias.name if alias.asname else top
        elif isinstance(node, ast.ImportFrom):
            where = f"{rel}:{node.lineno}"
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0]
                base = f"{anchor}.{base}" if base else anchor
            if not ours(base):
                continue
            for alias in node.names:
                child = f"{base}.{alias.name}"
                if child in modules:  # a submodule: `from belle.strategy import engine`
                    found.append(Edge(module, child, where))
                    bound[alias.asname or alias.name] = child
                else:
                    found.append(Edge(module, base, where, alias.name if is_private(alias.name) else None))
    for node in ast.walk(tree):  # `engine._build` on a module bound above
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            chain, value = [], node.value
            while isinstance(value, ast.Attribute):
                chain.append(value.attr)
                value = value.value
            if isinstance(value, ast.Name) and value.id in bound:
                target = ".".join([bound[value.id], *reversed(chain)])
                if target in modules:
                    found.append(Edge(module, target, f"{rel}:{node.lineno}", node.attr))
    return found


@cache
def graph() -> tuple[dict[str, Path], list[Edge]]:
    """Every module of ours and every import edge among them."""
    files = sources()
    return files, [edge for name, path in files.items()
                   for edge in edges(name, path.relative_to(ROOT).as_posix(), path.read_text(), set(files))]


def floor_of(module: str, files: dict[str, Path]) -> tuple[str | None, int | None]:
    row = row_of(files[module]) if module in files else None
    return row, FLOORS.get(row)


def circles(nodes: set[str], arcs: dict[tuple[str, str], str]) -> list[list[str]]:
    """Every strongly connected set of more than one node (Tarjan), each in a cycle's order where one exists."""
    after = {n: sorted(t for s, t in arcs if s == n and t != n) for n in nodes}
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on.add(node)
        for nxt in after[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(nodes):
        if node not in index:
            visit(node)
    return found


def describe(group: list[str], arcs: dict[tuple[str, str], str]) -> str:
    inside = set(group)
    return "; ".join(f"{s} → {t} ({w})" for (s, t), w in sorted(arcs.items()) if s in inside and t in inside)


def test_every_module_has_a_floor():
    files = sources()
    missing = sorted(f"{p.relative_to(ROOT)}" for p in files.values() if row_of(p) is None)
    assert not missing, f"no row in FLOORS (tests/test_floors.py) for: {', '.join(missing)}"


def test_every_row_names_something_that_exists():
    assert not [row for row in FLOORS if not (ROOT / row).exists()]


def test_imports_go_down_the_floors_only():
    files, found = graph()
    wrong = []
    for edge in found:
        if edge.target.split(".")[0] in OUTSIDE:
            wrong.append(f"{edge.where}: {edge.source} imports {edge.target}, which is outside the floors")
            continue
        (src_row, src), (dst_row, dst) = floor_of(edge.source, files), floor_of(edge.target, files)
        if dst is None:
            wrong.append(f"{edge.where}: {edge.source} imports {edge.target}, which is no module of ours")
        elif dst > src:
            wrong.append(f"{edge.where}: {edge.source} (floor {src}, {src_row}) imports {edge.target} "
                         f"(floor {dst}, {dst_row}): an upward edge")
    assert not wrong, "\n".join(dict.fromkeys(wrong))


def test_no_private_name_is_imported_from_another_module():
    _, found = graph()
    wrong = [f"{e.where}: {e.source} takes {e.private} from {e.target}" for e in found
             if e.private and e.source != e.target]
    assert not wrong, "\n".join(dict.fromkeys(wrong))


def test_no_import_circles_between_modules():
    files, found = graph()
    arcs = {}
    for e in found:
        if e.target in files and e.source != e.target:
            arcs.setdefault((e.source, e.target), e.where)
    groups = circles(set(files), arcs)
    assert not groups, "\n".join(f"circle: {describe(g, arcs)}" for g in groups)


def test_no_import_circles_between_rows():
    files, found = graph()
    arcs = {}
    for e in found:
        src, dst = floor_of(e.source, files)[0], floor_of(e.target, files)[0]
        if dst is not None and src != dst:
            arcs.setdefault((src, dst), f"{e.where}, {e.source} → {e.target}")
    groups = circles(set(FLOORS), arcs)
    assert not groups, "\n".join(f"circle: {describe(g, arcs)}" for g in groups)


def test_the_checks_find_what_they_look_for():
    """On made-up source: a TYPE_CHECKING import, a lazy import and a private attribute are edges; a circle is
    found."""
    text = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from launcher.plan import plan\n"
            "def f():\n    from belle.strategy import engine\n    return engine._hidden\n"
            "import belle.model.load\nbelle.model.load._secret\n")
    found = edges("belle.config.probe", "belle/config/probe.py", text, set(sources()))
    assert {(e.target, e.private, e.where.rsplit(":", 1)[1]) for e in found} == {
        ("launcher.plan", None, "3"), ("belle.strategy.engine", None, "5"), ("belle.strategy.engine", "_hidden", "6"),
        ("belle.model.load", None, "7"), ("belle.model.load", "_secret", "8"),
    }
    arcs = {("a", "b"): "a.py:1", ("b", "c"): "b.py:2", ("c", "a"): "c.py:3", ("c", "d"): "c.py:4"}
    assert circles({"a", "b", "c", "d"}, arcs) == [["a", "b", "c"]]
