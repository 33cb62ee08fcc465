"""What runs on Ray for a roles recipe (KIND "roles", PPO): pools of PoolWorkers placed exactly as
belle.rlhf.placement planned them, called by the recipe's Ray-free controller through RoleGroups.

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
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from belle import rundir
from belle.config import JobConfig
from belle.rlhf.placement import Placement, placement_of
from launcher.backends import Outcome

SLURM_SHARE = 0.001
"""Each bundle's share of its Slurm node's resource (``slurm-node:NAME``, 1 per node): pins it to that node."""


class RoleFailure(RuntimeError):
    """A rank died, raised or stalled during a phase; the message is one line naming role, rank, node, pid, phase."""


class PlacementTimeout(RuntimeError):
    """The planned bundles were not all placed within cluster.placement_timeout_s."""


class PoolWorker:
    """One rank of a pool, run as a Ray actor in its bundle: it hosts every role of the pool (``host``, a
    belle.rlhf.host.RoleHost) in this one process."""

    def __init__(self, host: type, job: JobConfig, run_dir: str, pool: str, roles: tuple[str, ...], rank: int,
                 world: int):
        self._host_args = (job, run_dir, pool, roles, rank, world)
        self._host_type = host
        self._host: Any = None

    def probe(self) -> dict:
        """Where this rank runs: Ray node id, IP, host name, the GPU ids Ray gave it, pid."""
        import ray

        return {
            "node_id": ray.get_runtime_context().get_node_id(), "ip": ray.util.get_node_ip_address(),
            "host": socket.gethostname(), "gpu_ids": [str(g) for g in ray.get_gpu_ids()], "pid": os.getpid(),
        }

    def free_port(self) -> int:
        """A TCP port free on this node now (rank 0's: the pool's torch.distributed master port)."""
        with socket.socket() as s:
            s.bind(("", 0))
            return s.getsockname()[1]

    def setup(self, master_addr: str, master_port: int) -> dict:
        """Build the host (torch.distributed for the pool, its roles, their resumed states)."""
        self._host = self._host_type(*self._host_args, master_addr, master_port)
        return self._host.setup()

    def call(self, role: str, method: str, *args, **kwargs):
        """``method`` of ``role`` on this rank."""
        return self._host.call(role, method, *args, **kwargs)


@dataclass
class _Rank:
    """One started PoolWorker, and where it runs once probed."""

    pool: str
    roles: tuple[str, ...]
    rank: int
    node: int
    """Logical node of the placement."""
    slot: int
    worker: Any
    where: dict = field(default_factory=dict)
    """PoolWorker.probe()'s answer."""

    def name(self, role: str | None = None) -> str:
        """``role critic rank 1 (node 10.0.0.2, pid 123)``; a pool's name where no role is meant."""
        who = f"role {role}" if role else f"pool {self.pool} ({'+'.join(self.roles)})"
        at = f"node {self.where['ip']}, pid {self.where['pid']}" if self.where else f"logical node {self.node}"
        return f"{who} rank {self.rank} ({at})"


def _cause(error: Exception) -> str:
    """One line of why a Ray call failed: the rank's own exception, or how its process ended."""
    import ray.exceptions

    if isinstance(error, ray.exceptions.RayTaskError):
        cause = error.cause if error.cause is not None else error
        lines = str(cause).strip().splitlines()
        return f"{type(cause).__name__}" + (f": {lines[0]}" if lines else "")
    text = " ".join(str(error).split()) or type(error).__name__
    detail = re.search(r"Worker exit detail: (.+?\.)", text)  # how the process ended, before Ray's list of guesses
    return text.split(". ")[0].rstrip(".") + (f" ({detail[1]})" if detail else "")


Target = tuple[_Rank, str | None]
"""A rank called, and the role the call is for (None: the pool as a whole, e.g. its setup)."""


def _gather(refs: list, targets: list[Target], phase: str, timeout_s: float, key: str, run_dir: Path) -> list:
    """The result of each of ``refs`` (one per target, in that order), waiting at most ``timeout_s`` in all and
    inspecting each finished ref at once: a dead or raising rank, or one still running at the deadline, ends the
    phase with RoleFailure (``key`` names the timeout's setting)."""
    import ray
    import ray.exceptions

    index = {ref.hex(): i for i, ref in enumerate(refs)}
    results: dict[int, Any] = {}
    pending = list(refs)
    deadline = time.monotonic() + timeout_s
    while pending:
        done, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
        if not done:
            stalled = list({(t[0].pool, t[0].rank): t for t in (targets[index[ref.hex()]] for ref in pending)}.values())
            raise RoleFailure(_stalled(stalled, phase, timeout_s, key, run_dir))
        for ref in done:
            i = index[ref.hex()]
            rank, role = targets[i]
            try:
                results[i] = ray.get(ref, timeout=0)
            except ray.exceptions.RayActorError as error:
                raise RoleFailure(f"{rank.name(role)} died during phase {phase}: {_cause(error)}") from None
            except ray.exceptions.RayTaskError as error:
                raise RoleFailure(f"{rank.name(role)} failed in phase {phase}: {_cause(error)}") from None
    return [results[i] for i in range(len(refs))]


def _stalled(stalled: list[Target], phase: str, timeout_s: float, key: str, run_dir: Path) -> str:
    """Write each stalled rank's stack to <run_dir>/hang/ (py-spy), kill its process, and say which one the others
    wait for: a stopped one, or one not waiting in a collective, else the first."""
    from launcher.watchdog import COLLECTIVES, inspect_process, kill_process, on_ray_node

    probed = [(rank, role) for rank, role in stalled if rank.where]
    if not probed:  # not started yet: no process to inspect
        rank, role = stalled[0]
        return f"{rank.name(role)} stalled in phase {phase} for {timeout_s:g} s ({key})"
    folder = run_dir / rundir.HANG
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    suspects = []
    for rank, role in probed:
        state, stack = on_ray_node(rank.where["host"], inspect_process, (rank.where["pid"],))
        (folder / f"{stamp}-pool-{rank.pool}-rank-{rank.rank}.txt").write_text(
            f"{rank.name(role)}, phase {phase}, process {state}\n\n{stack}"
        )
        if state in ("stopped", "tracing-stop") or not any(word in stack for word in COLLECTIVES):
            suspects.append((rank, role))
    for rank, _ in probed:
        on_ray_node(rank.where["host"], kill_process, (rank.where["pid"],))
    rank, role = (suspects or probed)[0]
    return (f"{rank.name(role)} stalled in phase {phase} for {timeout_s:g} s ({key}); {len(stalled)} rank(s) still "
            f"running, their stacks in {folder}: fix the stall, or raise {key} if the phase really takes that long")


class RoleGroups:
    """The controller's RoleCalls on Ray: ``call`` runs a role's method on every rank of its pool at once."""

    def __init__(self, pools: dict[str, list[_Rank]], run_dir: Path, phase_timeout: tuple[float, str]):
        self._pools = pools
        self._pool_of = {role: name for name, ranks in pools.items() for role in ranks[0].roles}
        self.run_dir, self.phase_timeout = Path(run_dir), phase_timeout
        self._sync_opened = False

    def world(self, role: str) -> int:
        """Ranks of ``role``."""
        return len(self._pools[self._pool_of[role]])

    def call(self, role: str, method: str, shards: list | None = None, *, phase: str, **kwargs) -> list:
        """One result per rank of ``role``, in rank order: rank i gets ``shards[i]`` as its first argument (None:
        no shard), and every rank the same ``kwargs``. Raises RoleFailure (one line) when a rank dies, raises, or
        the phase outlasts the recipe's phase timeout."""
        import ray

        ranks = self._pools[self._pool_of[role]]
        if shards is not None and len(shards) != len(ranks):
            raise ValueError(f"{len(shards)} shards for the {len(ranks)} ranks of role {role} in phase {phase}")
        first = [()] * len(ranks) if shards is None else [(ray.put(shard),) for shard in shards]
        refs = [r.worker.call.remote(role, method, *args, **kwargs) for r, args in zip(ranks, first, strict=True)]
        return self._gather(refs, [(r, role) for r in ranks], phase)

    def sync_weights(self, version: int, bucket_mb: int, *, phase: str = "sync") -> bool:
        """Give a rollout pool of its own the actor's weights as ``version`` → True (False, and nothing done: the
        rollout is in the actor's pool). Actor rank 0 broadcasts them in buckets of ``bucket_mb`` MB over a sync
        group {actor rank 0, every rollout rank}, opened at an attempt's first sync; each bucket is one Ray call per
        rank, every actor rank taking part in gathering it. Raises RoleFailure as ``call`` does, or when a rollout
        rank then holds another version.

        Role methods used: actor and rollout ``open_sync(master_addr, master_port, world)`` (actor rank 0 is sync
        rank 0, rollout rank r is 1 + r); actor ``weight_buckets(bucket_mb) -> int`` (the same on every rank) and
        ``send_bucket(index, bucket_mb)``; rollout ``receive_bucket(index, bucket_mb, version, last) -> int`` (the
        version it holds)."""
        actor, rollout = self._pools[self._pool_of["actor"]], self._pools[self._pool_of["rollout"]]
        if actor is rollout:
            return False
        targets = [(r, "actor") for r in actor] + [(r, "rollout") for r in rollout]

        def both(sending: tuple[str, dict], receiving: tuple[str, dict]) -> list:
            return ([r.worker.call.remote("actor", sending[0], **sending[1]) for r in actor]
                    + [r.worker.call.remote("rollout", receiving[0], **receiving[1]) for r in rollout])

        if not self._sync_opened:
            (port,) = self._gather([actor[0].worker.free_port.remote()], targets[:1], phase)
            group = ("open_sync", {"master_addr": actor[0].where["ip"], "master_port": port, "world": 1 + len(rollout)})
            self._gather(both(group, group), targets, phase)
            self._sync_opened = True
        count = self.call("actor", "weight_buckets", phase=phase, bucket_mb=bucket_mb)[0]
        refs = []  # every bucket's calls at once: each actor runs its calls in order, one at a time
        for index in range(count):
            refs += both(("send_bucket", {"index": index, "bucket_mb": bucket_mb}),
                         ("receive_bucket", {"index": index, "bucket_mb": bucket_mb, "version": version,
                                             "last": index == count - 1}))
        held = self._gather(refs, targets * count, phase)[-len(rollout):]
        for rank, was in zip(rollout, held, strict=True):
            if was != version:
                raise RoleFailure(f"{rank.name('rollout')} holds weights version {was} after the sync of version "
                                  f"{version} in phase {phase}: its receive_bucket must take the version at the last "
                                  "bucket")
        return True

    def _gather(self, refs: list, targets: list[Target], phase: str) -> list:
        return _gather(refs, targets, phase, *self.phase_timeout, self.run_dir)


class _Attempt:
    """The placement groups and PoolWorkers of one attempt; ``close`` removes them all."""

    def __init__(self):
        self.groups: list = []
        self.ranks: list[_Rank] = []

    def place(self, job: JobConfig, placement: Placement, timeout_s: float,
              slurm_nodes: Sequence[str] | None) -> dict[int, tuple[Any, list[int]]]:
        """One STRICT_PACK placement group per logical node, ready within ``timeout_s``: logical node → (group, its
        slots in bundle order)."""
        import ray
        from ray.util import placement_group

        from launcher.backends.slurm.node import node_resource

        c = job.cluster
        base = {"CPU": c.worker_cpus} | ({"GPU": 1} if c.use_gpu else {})
        bundle = {node: base | ({node_resource(slurm_nodes[node]): SLURM_SHARE} if slurm_nodes else {})
                  for node in range(placement.nodes_used)}
        slots: dict[int, set[int]] = {}
        for pool in placement.pools:
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
            pools = [p for p in placement.pools if any(n == node for n, _ in p.ranks)]
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

    def start(self, job: JobConfig, run_dir: Path, placement: Placement, placed: dict, host: type,
              timeout_s: float) -> dict[str, list[_Rank]]:
        """One PoolWorker per rank in its bundle (ranks node-major, as the placement says), each probed within
        ``timeout_s``: pool name → its ranks."""
        import ray
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        from launcher.backends.spmd import WORKER_ENV

        c = job.cluster
        actor = ray.remote(max_restarts=0, max_concurrency=1)(PoolWorker)
        env = {"env_vars": WORKER_ENV | c.worker_env(os.environ)}
        pools: dict[str, list[_Rank]] = {}
        for pool in placement.pools:
            for rank, (node, slot) in enumerate(pool.ranks):
                group, slots = placed[node]
                where = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=slots.index(slot))
                worker = actor.options(
                    num_cpus=c.worker_cpus, num_gpus=1 if c.use_gpu else 0, scheduling_strategy=where,
                    runtime_env=env,
                ).remote(host, job, str(run_dir), pool.name, _hosted(pool.roles), rank, pool.workers)
                self.ranks.append(_Rank(pool.name, pool.roles, rank, node, slot, worker))
                pools.setdefault(pool.name, []).append(self.ranks[-1])
        probes = _gather([r.worker.probe.remote() for r in self.ranks], [(r, None) for r in self.ranks], "start",
                         timeout_s, "cluster.placement_timeout_s", run_dir)
        for rank, where in zip(self.ranks, probes, strict=True):
            rank.where = where
        return pools

    def setup(self, pools: dict[str, list[_Rank]], run_dir: Path, timeout_s: float) -> None:
        """Every pool's torch.distributed world (rank 0's IP and a free port there) and roles, within ``timeout_s``."""
        firsts = [ranks[0] for ranks in pools.values()]
        ports = _gather([r.worker.free_port.remote() for r in firsts], [(r, None) for r in firsts], "setup", timeout_s,
                        "train.hang_first_step_s", run_dir)
        master = {r.pool: (r.where["ip"], port) for r, port in zip(firsts, ports, strict=True)}
        _gather([r.worker.setup.remote(*master[r.pool]) for r in self.ranks], [(r, None) for r in self.ranks], "setup",
                timeout_s, "train.hang_first_step_s", run_dir)

    def close(self) -> None:
        """Kill every PoolWorker and remove every placement group of this attempt."""
        import ray
        from ray.util import remove_placement_group

        for rank in self.ranks:
            ray.kill(rank.worker, no_restart=True)
        for group in self.groups:
            remove_placement_group(group)
        self.ranks, self.groups = [], []


def _hosted(roles: tuple[str, ...]) -> tuple[str, ...]:
    """The roles a pool's host builds: an hf rollout in the actor's pool is the actor itself generating."""
    return tuple(role for role in roles if role != "rollout" or "actor" not in roles)


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


def write_placement(run_dir: Path, pools: dict[str, list[_Rank]]) -> None:
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
    """Train ``job``'s roles recipe on the connected Ray → how it ended: why it failed (one line), the restarts, and
    why the recipe stopped early (its state's ``stopped``, e.g. a KL bound reached)."""
    from belle.recipes import recipe
    from belle.rlhf.host import RoleHost

    face = recipe(job.method.name)
    return run_roles(job, Path(run_dir), placement_of(job), host=RoleHost, train=face.train,
                     placement_timeout_s=job.cluster.placement_timeout_s, phase_timeout=face.phase_timeout(job))


def run_roles(job: JobConfig, run_dir: Path, placement: Placement, *, host: type,
              train: Callable[[JobConfig, Path, RoleGroups], Any], placement_timeout_s: float,
              phase_timeout: tuple[float, str]) -> Outcome:
    """``run`` with its parts given: place ``placement``'s pools, host their roles with ``host``, and call
    ``train(job, run_dir, groups)``, which returns its state (a dict, or None); a RoleFailure removes everything
    and, within train.max_failures, starts again (``train`` resumes from the latest checkpoint). Nothing of an
    attempt outlives it."""
    import ray

    run_dir = Path(run_dir)
    slurm_nodes = _slurm_nodes(job)
    if slurm_nodes is None:
        placement.check_nodes(sum(n["Alive"] for n in ray.nodes()), "the Ray cluster")
    else:
        placement.check_nodes(len(slurm_nodes), "the Slurm allocation")
    restarts = 0
    while True:
        attempt = _Attempt()
        try:
            placed = attempt.place(job, placement, placement_timeout_s, slurm_nodes)
            pools = attempt.start(job, run_dir, placement, placed, host, placement_timeout_s)
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
