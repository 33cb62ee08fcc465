"""The placement search: PPO's pools placed in order, the actor's first; a pool that fits in one node takes
contiguous slots of the first node with room, a bigger one takes whole empty nodes. Pure arithmetic on the config,
run by the dry-run plan before anything starts.

Memory per GPU of a pool = each role's resident model states (DeepSpeed's estimator: ZeRO-3 trained 4L + 18P/N,
frozen 4L + 2P/N; ZeRO-0 frozen 2P; ZeRO-1/2 trained 4P + 16P/N; L the largest module) + the largest working set of
the phases it runs one after another (train, forward, generation) + one overhead.
"""

from collections.abc import Mapping
from dataclasses import replace
from string import ascii_uppercase

from belle.config import ClusterConfig, StrategyConfig
from belle.config._checks import require
from belle.config.hardware import GIB, GPU_TYPES, OVERHEAD_GIB
from belle.config.roles import NAMED_LAYOUTS, ROLES, TRAINED_ROLES, RolesConfig
from belle.model.memory import activation_bytes, block_activation_bytes, kv_cache_bytes, logit_bytes
from belle.rlhf.placement import ModelSize, Placement, Pool

PoolSpec = tuple[str, tuple[str, ...], int]
"""A pool before placement: (name, roles, workers)."""
FORWARD_PHASE = {"actor": "log-probs", "critic": "values", "reference": "log-probs", "reward": "score"}
"""The forward pass each role runs on the rollout's sequences."""
SEPARATE_SHARE = {"actor": 2, "critic": 2, "reference": 1, "reward": 1, "rollout": 2}
"""roles.layout=separate: each pool's share of the slots is the sum of its roles' shares (16 GPUs: actor with the
hf rollout 8, critic 4, reference 2, reward 2; with a vLLM pool 4, 4, 2, 2 and 4)."""
TRAINED_STATE_BYTES = {True: 16, False: 12}
"""Bytes per trained parameter beyond its weight, by 16-bit precision: DeepSpeed's estimator counts gradient, fp32
master copy and Adam moments as 16 (its 18 bytes minus the 16-bit weight); fp32 training has no master copy."""


def plan_placement(
    roles: RolesConfig,
    cluster: ClusterConfig,
    strategy: StrategyConfig,
    models: Mapping[str, ModelSize],
    *,
    prompt_tokens: int,
    new_tokens: int,
) -> Placement:
    """Place the roles present in ``models`` (actor and critic always; reference and reward when the job has them;
    the rollout uses the actor's) on ``cluster``. ``strategy`` gives the trained roles' ZeRO stage, the precision
    and activation checkpointing; sequences are ``prompt_tokens`` + ``new_tokens`` long.

    Raises ValueError, naming the fix, for a placement that cannot work or (roles.check_memory) does not fit."""
    require(
        {"actor", "critic"} <= set(models) <= set(FORWARD_PHASE),
        f"models has {sorted(models)}: it needs actor and critic, and reference and reward where the job has them",
    )
    require(
        roles.rollout.engine != "vllm" or cluster.use_gpu,
        "roles.rollout.engine=vllm needs GPUs (cluster.gpus_per_node=0): set roles.rollout.engine=hf",
    )
    plan = _Planner(cluster, strategy, models, prompt_tokens + new_tokens)
    attempts = {name: plan.attempt(roles, name) for name in NAMED_LAYOUTS if name != roles.layout}
    if roles.layout == "auto":
        chosen = next(
            (
                name for name, p in attempts.items()
                if isinstance(p, Placement) and (p.fits is not False or not roles.check_memory)
            ),
            None,
        )
        placeable = any(isinstance(p, Placement) for p in attempts.values())
        require(
            chosen is not None,
            f"roles.layout=auto: no layout {'fits' if placeable else 'can be placed'} ("
            + "; ".join(f"{name}: {_summary(p)}" for name, p in attempts.items())
            + (f"): set {_memory_fixes(plan, roles, None)}" if placeable else ")"),
        )
        placement = attempts.pop(chosen)
    else:
        placement = plan.place(roles, roles.layout)
        if roles.check_memory and placement.fits is False:
            raise ValueError(_over_memory(plan, roles, placement, attempts))
    return replace(placement, requested=roles.layout, others=tuple((k, _summary(p)) for k, p in attempts.items()))


SCORE_ROLES = ("critic", "reward")
"""Roles whose model is a score model (one value per token)."""


def placement_of(job) -> Placement:
    """The placement of a PPO job's roles (``job.roles``), each sized by its own model."""
    from belle.config.ppo import present_roles, role_model

    ppo, lora = job.method.ppo, job.method.lora
    models = {
        role: ModelSize.of(role_model(job, role), score=role in SCORE_ROLES,
                           lora=lora if role in TRAINED_ROLES else None)
        for role in present_roles(job)
    }
    return plan_placement(job.roles, job.cluster, job.strategy, models, prompt_tokens=ppo.max_prompt_length,
                          new_tokens=ppo.max_new_tokens)


class _Planner:
    """One job's numbers, placing any layout of its roles."""

    def __init__(self, cluster: ClusterConfig, strategy: StrategyConfig, models: Mapping[str, ModelSize], tokens: int):
        self.cluster, self.strategy, self.models, self.tokens = cluster, strategy, models, tokens
        self.per_node = cluster.workers_per_node
        self.unit = "GPUs" if cluster.use_gpu else "CPU workers"
        self.capacity = GPU_TYPES[cluster.gpu_type][1] if cluster.use_gpu else None
        self.half = strategy.precision != "fp32"
        self.weight_bytes = 2 if self.half else 4

    def attempt(self, roles: RolesConfig, layout: str) -> Placement | str:
        """``place`` without memory checks, or why the layout cannot be placed."""
        try:
            return self.place(roles, layout)
        except ValueError as error:
            return str(error)

    def place(self, roles: RolesConfig, layout: str) -> Placement:
        """The placement of ``layout`` with its memory (not checked against the capacity)."""
        pools = self._custom(roles) if layout == "custom" else self._derive(roles, layout)
        rollout_pool, rollout_roles, rollout_workers = next(p for p in pools if "rollout" in p[1])
        tp = roles.rollout.tensor_parallel
        require(
            rollout_workers % tp == 0,
            f"roles.rollout.tensor_parallel={tp} does not divide the rollout's {rollout_workers} workers under "
            f"roles.layout={layout}: set roles.rollout.tensor_parallel to a divisor of {rollout_workers}, or "
            f"roles.layout=custom with roles.rollout.workers a multiple of {tp}",
        )
        ranks = self._ranks(pools, layout)
        engine = roles.rollout.engine + (f" TP{tp}" if tp > 1 else "")
        return Placement(
            layout=layout, requested=layout, device=self.cluster.gpu_type if self.cluster.use_gpu else "cpu",
            nodes=self.cluster.nodes, slots_per_node=self.per_node,
            pools=tuple(self._pool(roles, name, rs, w, r) for (name, rs, w), r in zip(pools, ranks, strict=True)),
            models=tuple((role, self.models[role].label) for role in ROLES if role in self.models),
            rollout=f"{engine} in {'its own ' if len(rollout_roles) == 1 else ''}pool {rollout_pool}", others=(),
        )

    def _derive(self, roles: RolesConfig, layout: str) -> list[PoolSpec]:
        """A named layout's pools: (name, roles, workers), sized from the cluster's slots."""
        groups = {
            "colocate_all": [("actor", "critic", "reference", "reward")],
            "pairs": [("actor", "reference"), ("critic", "reward")],
            "separate": [("actor",), ("critic",), ("reference",), ("reward",)],
        }[layout]
        vllm = roles.rollout.engine == "vllm"
        groups = [
            tuple(r for r in g if r in self.models) + (("rollout",) if "actor" in g and not vllm else ())
            for g in groups
        ]
        groups = [g for g in groups if g] + ([("rollout",)] if vllm else [])
        shares = [sum(SEPARATE_SHARE[r] for r in g) if layout == "separate" else 1 for g in groups]
        slots = self.cluster.nodes * self.per_node
        return [
            (name, g, self._fit(slots * share // sum(shares)))
            for name, g, share in zip(ascii_uppercase, groups, shares, strict=False)
        ]

    def _fit(self, workers: int) -> int:
        """``workers`` rounded down to whole nodes, or within a node to a divisor of its slots (at least 1)."""
        if workers >= self.per_node:
            return workers // self.per_node * self.per_node
        return max(d for d in range(1, max(workers, 1) + 1) if self.per_node % d == 0)

    def _custom(self, roles: RolesConfig) -> list[PoolSpec]:
        """roles.layout=custom's pools from every role's workers and pool, in order of first use (actor's first)."""
        pools: dict[str, list[str]] = {}
        for role in ROLES:
            block = roles.block(role)
            if role != "rollout" and role not in self.models:
                require(
                    not block.workers,
                    f"roles.{role}.workers={block.workers}, but this job has no {role}: set roles.{role}.workers=0",
                )
                continue
            require(
                bool(block.workers) and block.pool is not None,
                f"roles.layout=custom places every role by hand: set roles.{role}.workers and roles.{role}.pool",
            )
            pools.setdefault(block.pool, []).append(role)
        result = []
        for name, members in pools.items():
            workers = {role: roles.block(role).workers for role in members}
            first = members[0]
            for role, w in workers.items():
                require(
                    w == workers[first],
                    f"roles.{first} ({workers[first]} workers) and roles.{role} ({w}) share pool {name}: colocated "
                    f"roles need equal workers; set roles.{role}.workers={workers[first]} or give roles.{role}.pool "
                    "a pool of its own",
                )
            if "rollout" in members and len(members) > 1:
                require(
                    "actor" in members,
                    f"roles.rollout.pool={name} holds {', '.join(members[:-1])} but not the actor: the rollout "
                    "generates with the actor's weights; set roles.rollout.pool to the actor's pool or its own",
                )
                require(
                    roles.rollout.engine == "hf",
                    f"roles.rollout.engine=vllm shares pool {name}: vLLM needs a pool of its own; set "
                    "roles.rollout.pool=<a new name> or roles.rollout.engine=hf",
                )
            result.append((name, tuple(members), workers[first]))
        return result

    def _ranks(self, pools: list[PoolSpec], layout: str) -> list[tuple[tuple[int, int], ...]]:
        """(node, slot) of every rank of each pool, pools in order: first fit within a node, else whole empty
        nodes."""
        nodes, per_node = self.cluster.nodes, self.per_node
        need = sum(w for _, _, w in pools)
        shown = ", ".join(f"{'+'.join(rs)} {w}" for _, rs, w in pools)
        fix = (
            "lower roles.<role>.workers or share pools (roles.<role>.pool)"
            if layout == "custom"
            else "set roles.layout=colocate_all or pairs"
        )
        require(
            need <= nodes * per_node,
            f"roles.layout={layout} needs {need} {self.unit} ({shown}) but the cluster has {nodes * per_node} "
            f"({nodes} node(s) x {per_node}): {fix}, or cluster.nodes={-(-need // per_node)}",
        )
        used = [0] * nodes
        placed = []
        for name, members, workers in pools:
            label = f"pool {name} ({'+'.join(members)}, {workers} {self.unit})"
            if workers <= per_node:
                node = next((n for n in range(nodes) if per_node - used[n] >= workers), None)
                require(
                    node is not None,
                    f"{label} finds no node with {workers} free slots (free: "
                    f"{', '.join(f'n{n} {per_node - u}' for n, u in enumerate(used))}): a pool within one node takes "
                    f"one node's slots; make the pools' workers divide {per_node}, or set cluster.nodes={nodes + 1}",
                )
                placed.append(tuple((node, used[node] + s) for s in range(workers)))
                used[node] += workers
                continue
            require(
                workers % per_node == 0,
                f"{label} splits nodes unevenly: a pool bigger than one node takes whole nodes of {per_node}; set "
                f"its roles' workers to {workers // per_node * per_node} or {(workers // per_node + 1) * per_node}",
            )
            empty = [n for n in range(nodes) if used[n] == 0][: workers // per_node]
            require(
                len(empty) == workers // per_node,
                f"{label} needs {workers // per_node} empty nodes, and {len(empty)} are left: {fix}, or set "
                f"cluster.nodes={nodes + workers // per_node - len(empty)}",
            )
            placed.append(tuple((n, s) for n in empty for s in range(per_node)))
            for n in empty:
                used[n] = per_node
        return placed

    def _pool(
        self, roles: RolesConfig, name: str, members: tuple[str, ...], workers: int, ranks: tuple[tuple[int, int], ...]
    ) -> Pool:
        """A placed pool with its memory per GPU."""
        states, phases = [], []
        for role in members:
            if role == "rollout":
                state, phase = self._rollout(roles, members)
                states += state
                phases.append(("rollout", phase))
                continue
            size, block = self.models[role], roles.block(role)
            stage = self._stage(role, block.zero_stage)
            trained = role in TRAINED_ROLES
            require(
                not block.offload or stage == 3 or (trained and stage > 0),
                f"roles.{role}.offload=true needs ZeRO-3{' (or 1-2)' if trained else ' for a frozen role'}, and "
                f"roles.{role} runs ZeRO-{stage}: set roles.{role}.zero_stage=3",
            )
            kind = f"Z{stage}-{'train' if trained else 'frozen'}{'-offload' if block.offload else ''}"
            states.append((role, kind, self._states(size, stage, trained, block.offload, workers) / GIB))
            phases += self._phases(role, size, block.micro_batch)
        vllm = roles.rollout.engine == "vllm" and "rollout" in members
        capacity = self.capacity
        if capacity is not None and vllm:
            capacity *= roles.rollout.gpu_memory_utilization
        overhead = OVERHEAD_GIB if self.cluster.use_gpu and not vllm else 0.0
        return Pool(name, members, workers, ranks, tuple(states), tuple(phases), overhead, capacity)

    def _stage(self, role: str, stage: int | None) -> int:
        """A role's ZeRO stage: as set, else a trained role's strategy.zero_stage, a frozen role's 3 if that is 3,
        else 0."""
        if stage is not None:
            return stage
        if role in TRAINED_ROLES:
            return self.strategy.zero_stage
        return 3 if self.strategy.zero_stage == 3 else 0

    def _states(self, size: ModelSize, stage: int, trained: bool, offload: bool, ranks: int) -> float:
        """Bytes of resident model states per GPU (DeepSpeed's estimate_zero3/zero2_model_states_mem_needs,
        trained states for ``size.trainable`` only)."""
        w, p, t = self.weight_bytes, size.params, size.trainable if trained else 0
        extra = TRAINED_STATE_BYTES[self.half] * t
        if stage == 3:  # the largest module gathered (16-bit weight and gradient), the rest sharded
            return 2 * w * size.largest_module + (0 if offload else (w * p + extra) / ranks)
        return w * p + (0 if offload else w * t + extra / (ranks if stage else 1))

    def _phases(self, role: str, size: ModelSize, micro_batch: int) -> list[tuple[str, float]]:
        """(phase, GiB) of the passes ``role`` runs on micro-batches of full-length sequences."""
        m, tokens = size.model, micro_batch * self.tokens
        def logits(backward: bool) -> int:
            return 0 if size.score else logit_bytes(m, tokens, backward)

        phases = [(FORWARD_PHASE[role], (block_activation_bytes(m, tokens) + logits(False)) / GIB)]
        if role in TRAINED_ROLES:
            train = activation_bytes(m, tokens, self.strategy.activation_checkpointing)
            phases.append((f"{role}-train", (train + logits(True)) / GIB))
        return phases

    def _rollout(self, roles: RolesConfig, members: tuple[str, ...]) -> tuple[list[tuple[str, str, float]], float]:
        """The rollout's resident states and its generation working set (GiB per GPU): in the actor's pool the
        gathered weights (whole model, or a module at a time) + the KV cache; in its own pool a full copy (vLLM: a
        tensor-parallel shard) + the KV cache."""
        r, size, w = roles.rollout, self.models["actor"], self.weight_bytes
        kv = kv_cache_bytes(size.model, r.micro_batch, self.tokens, w) / GIB
        if "actor" in members:
            if self._stage("actor", roles.actor.zero_stage) != 3:
                return [], kv  # the weights are whole on every GPU already
            gathered = w * size.params if r.gather_weights else 2 * w * size.largest_module
            return [], gathered / GIB + kv
        kind = f"vllm-TP{r.tensor_parallel}" if r.engine == "vllm" else "Z0-frozen"
        return [("rollout", kind, w * size.params / r.tensor_parallel / GIB)], kv


def _summary(attempt: Placement | str) -> str:
    """A layout's GiB per GPU (and the pool over its memory), or why it cannot be placed."""
    if isinstance(attempt, str):
        return attempt
    worst = max(attempt.pools, key=lambda p: p.total)
    if worst.fits is False:
        return f"pool {worst.name} needs {worst.total:.2f} of {worst.capacity:g} GiB/GPU"
    return f"{worst.total:.1f} GiB/GPU"


def _memory_fixes(plan: _Planner, roles: RolesConfig, placement: Placement | None) -> str:
    """The settings that lower memory: gathering off (with its GiB for ``placement``'s layout), LoRA, no check."""
    fixes = []
    gathers = placement is None or "rollout" in placement.pool_of("actor").roles
    if roles.rollout.engine == "hf" and roles.rollout.gather_weights and gathers:
        lean = replace(roles, rollout=replace(roles.rollout, gather_weights=False))
        gib = f" ({max(p.total for p in plan.place(lean, placement.layout).pools):.1f} GiB/GPU)" if placement else ""
        fixes.append(f"roles.rollout.gather_weights=false{gib}")
    if plan.models["actor"].trainable == plan.models["actor"].params:
        fixes.append("LoRA (method.lora)")
    return ", ".join(fixes + ["or roles.check_memory=false"])


def _over_memory(
    plan: _Planner, roles: RolesConfig, placement: Placement, others: Mapping[str, Placement | str]
) -> str:
    """The error for a placed layout over its GPUs' memory, naming the layouts that fit and the other fixes."""
    pool = max(placement.pools, key=lambda p: p.total)
    fitting = [
        f"roles.layout={name} ({_summary(p)})"
        for name, p in others.items()
        if isinstance(p, Placement) and p.fits
    ]
    return (
        f"pool {pool.name} ({'+'.join(pool.roles)}) needs {pool.total:.1f} GiB per GPU (largest phase: "
        f"{pool.peak[0]} {pool.peak[1]:.2f}), over the {pool.capacity:g} GiB of each {placement.device}: set "
        + ", ".join(fitting + [_memory_fixes(plan, roles, placement)])
    )
