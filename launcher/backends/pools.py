"""What runs on Ray for a driver recipe (KIND "driver", PPO): pools of PoolWorkers placed exactly as
belle.rlhf.placement planned them, called by the recipe's Ray-free driver through RoleGroups
(launcher.backends.pool_calls). An SPMD recipe runs as one such pool (launcher.backends.spmd).

One STRICT_PACK placement group per logical node holds that node's bundles ({GPU: 1, CPU: c}, or {CPU: c}; under
Slurm each also asks for a share of the node's resource, so logical node i is the i-th Slurm node). One PoolWorker
per bundle hosts every role of its pool: one process, one CUDA context and one torch.distributed world per pool.
A rollout pool of its own gets the actor's weights in buckets (RoleGroups.sync_weights).

Every wait is bounded: placement and worker start by cluster.placement_timeout_s, setup by train.hang_first_step_s,
each phase by the recipe's phase timeout. A rank that dies, raises or stalls ends the phase with RoleFailure, one
line naming role, rank, node, pid and phase (a stalled rank's stack is written to <run_dir>/hang/ first). ``run``
then removes every worker and placement group and, within train.max_failures, builds them again and calls the
recipe again, which resumes from the latest checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from belle import rundir
from belle.config import JobConfig
from belle.config._checks import require
from belle.rlhf.placement import Placement
from belle.rlhf.planner import placement_of
from launcher.backends import Outcome
from launcher.backends.pool_calls import PoolRank, PoolWorker, RoleFailure, RoleGroups, gather

SLURM_SHARE = 0.001
"""Each bundle's share of its Slurm node's resource (``slurm-node:NAME``, 1 per node): pins it to that node."""
WORKER_ENV = {"PYTHONWARNINGS": "ignore::FutureWarning"}  # DeepSpeed's own torch.distributed deprecations, per call
"""Every PoolWorker's environment, under the user's cluster.env."""


@dataclass(frozen=True)
class PoolLayout:
    """Where one pool's ranks run: its name, the roles every rank hosts, and (logical node, slot) of each rank in rank
    order; the ranks of a logical node share one Ray node."""

    name: str
    roles: tuple[str, ...]
    ranks: tuple[tuple[int, int], ...]

    @property
    def workers(self) -> int:
        return len(self.ranks)


class PlacementTimeout(RuntimeError):
    """The planned bundles were not all placed within cluster.placement_timeout_s."""


class _Attempt:
    """The placement groups and PoolWorkers of one attempt; ``close`` removes them all."""

    def __init__(self):
        self.groups: list = []
        self.ranks: list[PoolRank] = []

    def place(self, job: JobConfig, layouts: Sequence[PoolLayout], timeout_s: float,
              slurm_nodes: Sequence[str] | None) -> dict[int, tuple[Any, list[int]]]:
        """One STRICT_PACK placement group per logical node, ready within ``timeout_s``: logical node → (group, its
        slots in bundle order)."""
        import ray
        from ray.util import placement_group

        from launcher.backends.slurm.node import node_resource

        c = job.cluster
        base = {"CPU": c.worker_cpus} | ({"GPU": 1} if c.use_gpu else {})
        bundle = {node: base | ({node_resource(slurm_nodes[node]): SLURM_SHARE} if slurm_nodes else {})
                  for node in range(_nodes_used(layouts))}
        slots: dict[int, set[int]] = {}
        for pool in layouts:
            for node, slot in pool.ranks:
                slots.setdefault(node, set()).add(slot)
        placed = {}
        for node in sorted(slots):
            group = placement_group([bundle[node]] * len(slots[node]), strategy="STRICT_PACK")
            self.groups.append(group)
            placed[node] = (group, sorted(slots[node]))
        refs = [group.ready() for group, _ in placed.values()]
        ready = {ref.hex(): node for ref, node in zip(refs, placed, strict=True)}
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        missing = sorted(set(placed) - {ready[ref.hex()] for ref in done})
        if missing:
            node = missing[0]
            pools = [p for p in layouts if any(n == node for n, _ in p.ranks)]
            names = ", ".join(f"{p.name} ({'+'.join(p.roles)})" for p in pools)
            need = ", ".join(f"{k} {v:g}" for k, v in bundle[node].items())
            raise PlacementTimeout(
                f"pool{'s' * (len(pools) > 1)} {names} on logical node {node} was not placed within {timeout_s:g} s "
                f"(cluster.placement_timeout_s): it needs {len(slots[node])} bundles of {{{need}}} on one Ray node; "
                f"free: {_free_resources()}: give the cluster such nodes, set cluster.nodes and "
                "cluster.gpus_per_node (or cpu_workers_per_node) to what it has, or raise cluster.placement_timeout_s "
                "if nodes are still joining"
            )
        return placed

    def start(self, job: JobConfig, run_dir: Path, layouts: Sequence[PoolLayout], placed: dict, host: type,
              timeout_s: float) -> dict[str, list[PoolRank]]:
        """One PoolWorker per rank in its bundle (ranks node-major, as the placement says), each probed within
        ``timeout_s``: pool name → its ranks."""
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        c = job.cluster
        actor = ray.remote(max_restarts=0, max_concurrency=1)(PoolWorker)
        env = {"env_vars": WORKER_ENV | c.worker_env(os.environ)}
        pools: dict[str, list[PoolRank]] = {}
        for pool in layouts:
            for rank, (node, slot) in enumerate(pool.ranks):
                group, slots = placed[node]
                where = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=slots.index(slot))
                worker = actor.options(
                    num_cpus=c.worker_cpus, num_gpus=1 if c.use_gpu else 0, scheduling_strategy=where,
                    runtime_env=env,
                ).remote(host, job, str(run_dir), pool.name, _hosted(pool.roles), rank, pool.workers)
                self.ranks.append(PoolRank(pool.name, pool.roles, rank, node, slot, worker))
                pools.setdefault(pool.name, []).append(self.ranks[-1])
        probes = gather([r.worker.probe.remote() for r in self.ranks], [(r, None) for r in self.ranks], "start",
                         timeout_s, "cluster.placement_timeout_s", run_dir)
        for rank, where in zip(self.ranks, probes, strict=True):
            rank.where = where
        return pools

    def setup(self, pools: dict[str, list[PoolRank]], run_dir: Path, timeout_s: float) -> None:
        """Every pool's torch.distributed world (rank 0's IP and a free port there) and roles, within ``timeout_s``."""
        firsts = [ranks[0] for ranks in pools.values()]
        ports = gather([r.worker.free_port.remote() for r in firsts], [(r, None) for r in firsts], "setup", timeout_s,
                        "train.hang_first_step_s", run_dir)
        master = {r.pool: (r.where["ip"], port) for r, port in zip(firsts, ports, strict=True)}
        gather([r.worker.setup.remote(*master[r.pool], _visible(self.ranks, r)) for r in self.ranks],
               [(r, None) for r in self.ranks], "setup", timeout_s, "train.hang_first_step_s", run_dir)

    def close(self) -> None:
        """Kill every PoolWorker and remove every placement group of this attempt."""
        import ray
        from ray.util import remove_placement_group

        for rank in self.ranks:
            ray.kill(rank.worker, no_restart=True)
        for group in self.groups:
            remove_placement_group(group)
        self.ranks, self.groups = [], []


def _visible(ranks: list[PoolRank], rank: PoolRank) -> list[str]:
    """The GPU ids ``rank``'s process is to see: its own first (its ``cuda:0``), then every other GPU of this attempt
    on its Ray node, so NCCL can reach them directly (CUDA IPC between two processes needs both devices visible
    in each; with one GPU apiece NCCL falls back to copies through host memory). Empty on CPU workers."""
    own = rank.where["gpu_ids"]
    node = {g for r in ranks if r.where["node_id"] == rank.where["node_id"] for g in r.where["gpu_ids"]}
    return own + sorted(node - set(own), key=lambda g: (len(g), g))


def _hosted(roles: tuple[str, ...]) -> tuple[str, ...]:
    """The roles a pool's host builds: an hf rollout in the actor's pool is the actor itself generating."""
    return tuple(role for role in roles if role != "rollout" or "actor" not in roles)


def pool_layouts(placement: Placement) -> list[PoolLayout]:
    """Where each pool of a driver recipe's placement runs."""
    return [PoolLayout(p.name, p.roles, p.ranks) for p in placement.pools]


def _nodes_used(layouts: Sequence[PoolLayout]) -> int:
    """Logical nodes holding at least one rank."""
    return 1 + max(node for pool in layouts for node, _ in pool.ranks)


def check_nodes(layouts: Sequence[PoolLayout], available: int, where: str) -> None:
    """Refuse a cluster with fewer nodes than the pools use; ``where`` names it, e.g. ``the Slurm allocation``."""
    used = _nodes_used(layouts)
    require(available >= used, f"the job's ranks use {used} nodes but {where} has {available}: set "
                               f"cluster.nodes={available}, or run where {used} nodes are available")


def _free_resources() -> str:
    """Each live Ray node's free CPUs and GPUs, e.g. ``10.0.0.1 (3f2a9c01) CPU 8 GPU 0``."""
    import ray
    from ray._private.state import available_resources_per_node  # Ray's own per-node view (DeveloperAPI)

    free = available_resources_per_node()
    return "; ".join(
        f"{n['NodeManagerAddress']} ({n['NodeID'][:8]}) CPU {free.get(n['NodeID'], {}).get('CPU', 0):g} "
        f"GPU {free.get(n['NodeID'], {}).get('GPU', 0):g}"
        for n in ray.nodes() if n["Alive"]
    )


def write_placement(run_dir: Path, pools: dict[str, list[PoolRank]]) -> None:
    """<run_dir>/placement.json: role → its ranks in order, each with pool, logical node and slot, Ray node id, IP,
    GPU ids and pid."""
    roles: dict[str, list[dict]] = {}
    for ranks in pools.values():
        for r in ranks:
            row = {"pool": r.pool, "rank": r.rank, "node": r.node, "slot": r.slot,
                   **{k: r.where[k] for k in ("node_id", "ip", "gpu_ids", "pid")}}
            for role in r.roles:
                roles.setdefault(role, []).append(row)
    rundir.write_atomic(Path(run_dir) / rundir.PLACEMENT, json.dumps({"roles": roles}, indent=2) + "\n")


def _slurm_nodes(job: JobConfig) -> list[str] | None:
    """The Slurm job's nodes in allocation order (the head first), or None outside Slurm."""
    if job.cluster.kind != "slurm":
        return None
    listed = subprocess.run(["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]], capture_output=True,
                            text=True, timeout=60, check=True)
    return listed.stdout.split()


def run(job: JobConfig, run_dir: Path) -> Outcome:
    """Train ``job``'s driver recipe on the connected Ray → how it ended: why it failed (one line), the restarts, and
    why the recipe stopped early (its state's ``stopped``, e.g. a KL bound reached)."""
    from belle.recipes import recipe
    from belle.rlhf.host import RoleHost

    face = recipe(job.method.name)
    return run_pools(job, Path(run_dir), pool_layouts(placement_of(job)), host=RoleHost, train=face.train,
                     placement_timeout_s=job.cluster.placement_timeout_s, phase_timeout=face.phase_timeout(job))


def run_pools(job: JobConfig, run_dir: Path, layouts: Sequence[PoolLayout], *, host: type,
              train: Callable[[JobConfig, Path, RoleGroups], Any], placement_timeout_s: float,
              phase_timeout: tuple[float | None, str]) -> Outcome:
    """``run`` with its parts given: place the pools of ``layouts``, host their roles with ``host``, and call
    ``train(job, run_dir, groups)``, which returns its state (a dict, or None); a RoleFailure removes everything
    and, within train.max_failures, starts again (``train`` resumes from the latest checkpoint). Nothing of an
    attempt outlives it."""
    import ray

    run_dir = Path(run_dir)
    slurm_nodes = _slurm_nodes(job)
    if slurm_nodes is None:
        check_nodes(layouts, sum(n["Alive"] for n in ray.nodes()), "the Ray cluster")
    else:
        check_nodes(layouts, len(slurm_nodes), "the Slurm allocation")
    restarts = 0
    while True:
        attempt = _Attempt()
        try:
            placed = attempt.place(job, layouts, placement_timeout_s, slurm_nodes)
            pools = attempt.start(job, run_dir, layouts, placed, host, placement_timeout_s)
            write_placement(run_dir, pools)
            attempt.setup(pools, run_dir, job.train.hang_first_step_s)
            state = train(job, run_dir, RoleGroups(pools, run_dir, phase_timeout)) or {}
            return Outcome(restarts=restarts, note=state.get("stopped"))
        except PlacementTimeout as error:
            return Outcome(str(error), restarts)
        except RoleFailure as failure:
            if restarts == job.train.max_failures:
                return Outcome(str(failure), restarts)
            restarts += 1
            print(f"error: {failure}; restarting every role from the latest checkpoint (restart {restarts} of "
                  f"train.max_failures={job.train.max_failures})", file=sys.stderr, flush=True)
        except (ValueError, RuntimeError) as error:  # the controller's own (a NaN loss, a refused resume): no restart
            return Outcome(str(error), restarts)
        finally:
            attempt.close()
