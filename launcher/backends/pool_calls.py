"""The driver's calls to its pools' ranks on Ray: one PoolWorker actor per rank hosts every role of its pool, and
every call is a bounded gather whose failure is one line naming role, rank, node, pid and phase (a stalled rank's
stack is written to <run_dir>/hang/ first)."""

from __future__ import annotations

import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from belle import rundir
from belle.config import JobConfig


class RoleFailure(RuntimeError):
    """A rank died, raised or stalled during a phase; the message is one line naming role, rank, node, pid, phase."""


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

    def setup(self, master_addr: str, master_port: int, visible: list[str]) -> dict:
        """Build the host (torch.distributed for the pool, its roles, their resumed states), the process seeing the
        GPUs ``visible`` names (its own first: ``cuda:0``) before anything here starts CUDA."""
        if visible:
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(visible)
        self._host = self._host_type(*self._host_args, master_addr, master_port)
        return self._host.setup()

    def call(self, role: str, method: str, *args, **kwargs):
        """``method`` of ``role`` on this rank."""
        return self._host.call(role, method, *args, **kwargs)


@dataclass
class PoolRank:
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


Target = tuple[PoolRank, str | None]
"""A rank called, and the role the call is for (None: the pool as a whole, e.g. its setup)."""


def gather(refs: list, targets: list[Target], phase: str, timeout_s: float | None, key: str, run_dir: Path) -> list:
    """The result of each of ``refs`` (one per target, in that order), waiting at most ``timeout_s`` in all (None: no
    bound) and inspecting each finished ref at once: a dead or raising rank, or one still running at the deadline,
    ends the phase with RoleFailure (``key`` names the timeout's setting)."""
    import ray
    import ray.exceptions

    index = {ref.hex(): i for i, ref in enumerate(refs)}
    results: dict[int, Any] = {}
    pending = list(refs)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while pending:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        done, pending = ray.wait(pending, num_returns=1, timeout=left)
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

    def __init__(self, pools: dict[str, list[PoolRank]], run_dir: Path, phase_timeout: tuple[float | None, str]):
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
        return self.gather(refs, [(r, role) for r in ranks], phase)

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
            (port,) = self.gather([actor[0].worker.free_port.remote()], targets[:1], phase)
            group = ("open_sync", {"master_addr": actor[0].where["ip"], "master_port": port, "world": 1 + len(rollout)})
            self.gather(both(group, group), targets, phase)
            self._sync_opened = True
        count = self.call("actor", "weight_buckets", phase=phase, bucket_mb=bucket_mb)[0]
        refs = []  # every bucket's calls at once: each actor runs its calls in order, one at a time
        for index in range(count):
            refs += both(("send_bucket", {"index": index, "bucket_mb": bucket_mb}),
                         ("receive_bucket", {"index": index, "bucket_mb": bucket_mb, "version": version,
                                             "last": index == count - 1}))
        held = self.gather(refs, targets * count, phase)[-len(rollout):]
        for rank, was in zip(rollout, held, strict=True):
            if was != version:
                raise RoleFailure(f"{rank.name('rollout')} holds weights version {was} after the sync of version "
                                  f"{version} in phase {phase}: its receive_bucket must take the version at the last "
                                  "bucket")
        return True

    def gather(self, refs: list, targets: list[Target], phase: str) -> list:
        return gather(refs, targets, phase, *self.phase_timeout, self.run_dir)
