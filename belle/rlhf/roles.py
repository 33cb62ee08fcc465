"""PPO's roles as plain objects, one per process and role (belle.rlhf.host hosts those of a pool): ``Policy`` (the
actor), ``Critic``, ``Frozen`` (the reference policy, or the reward model) and ``Rollout`` (an hf rollout pool of its
own, fed the actor's weights by belle.rlhf.weight_sync; in the actor's pool the actor generates itself).

A batch is a dict of CPU tensors for n sequences of a prompt left-padded to P tokens and a response right-padded
to R: ``input_ids`` and ``attention_mask`` [n, P + R], ``response_mask`` [n, R] (true on response tokens up to and
with the EOS). Per-token outputs are [n, R]: the log-prob or value of response token t is read at position t − 1.
Updates take this rank's shards of the step's mini-batches, each with the mini-batch's global response-token count
``tokens``: a loss is a token sum over that count, so every rank and micro-batch split gives the same gradient.

Trained models have dropout p=0, so a first mini-batch's ratio is 1; ``model.eval()`` is never used for their
forward passes (it would also switch activation checkpointing off), only around ``generate``, whose KV cache
activation checkpointing would drop.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from belle.config import JobConfig
from belle.config.ppo import TRAINED_ROLES, ppo_settings, role_model, roles_settings, zero_stage
from belle.model.heads import CAUSAL_LM, SCORE
from belle.rlhf.ppo_losses import entropy_from_logits, log_probs_from_logits, masked_mean, policy_loss, value_loss
from belle.rlhf.weight_sync import SyncGroup, WeightStream
from belle.train.state import CHECKPOINT_TAG


@dataclass(frozen=True)
class Worker:
    """Where a role runs: its rank in its pool's world, the world size, and the attention implementation."""

    rank: int
    world: int
    attention: str
    steps: int
    """PPO steps of the run (a trained role's learning-rate schedule spans its optimizer steps over them)."""


def step_seed(*parts: int) -> int:
    """A seed from integers (seed, step, rank…): the same parts give the same seed in any process."""
    seed = 0
    for part in parts:
        seed = (seed * 1_000_003 + part) % (2**63 - 1)
    return seed


class Policy:
    """The actor: a causal LM engine (full or LoRA) that generates, gives log-probs and trains on the clipped policy
    loss. With LoRA its adapters switched off are the reference policy."""

    def __init__(self, job: JobConfig, worker: Worker):
        self.job, self.worker, self.ppo = job, worker, ppo_settings(job)
        self.block = roles_settings(job).actor
        self.engine = _trained_engine(job, "actor", job.optim, worker, CAUSAL_LM)
        self.sampler = Sampler(job, worker.rank)
        self.weights, self.sync = WeightStream(self.engine.module), None

    def generate(self, prompts: list[list[int]], step: int) -> list[list[int]]:
        """``Sampler.sample``'s responses, by the actor's own weights (an hf rollout in the actor's pool)."""
        import deepspeed

        zero3 = self.engine.zero_optimization_partition_weights()
        gather = zero3 and roles_settings(self.job).rollout.gather_weights
        module = self.engine.module
        with deepspeed.zero.GatheredParameters(list(module.parameters())) if gather else nullcontext():
            return self.sampler.sample(module, prompts, step, self.engine.device, synced_gpus=zero3 and not gather)

    @torch.no_grad()
    def log_probs(self, batch: dict, adapters: bool = True) -> torch.Tensor:
        """[n, R] log-probs of the response tokens; ``adapters=False``: of the LoRA base (the reference)."""
        micros = micro_batches(batch, self.block.micro_batch)
        with nullcontext() if adapters else self.engine.module.disable_adapter():
            return torch.cat([response_log_probs(self.engine, m, self.ppo.temperature)[0].cpu() for m in micros])

    def update(self, minibatches: list[dict]) -> dict[str, float]:
        """One optimizer step per mini-batch on the clipped policy loss → summed stats (belle.rlhf.roles.merge)."""
        stats = Stats()
        for index, minibatch in enumerate(minibatches):
            micros = micro_batches(minibatch, self.block.micro_batch)
            for micro in micros:
                logp, logits = response_log_probs(self.engine, micro, self.ppo.temperature)
                mask = micro["response_mask"].to(logp.device)
                old, advantages = micro["old_log_probs"].to(logp.device), micro["advantages"].to(logp.device)
                loss, parts = policy_loss(logp, old, advantages, mask, self.ppo.clip, token_count=minibatch["tokens"])
                self.engine.backward(loss * self.worker.world * len(micros))
                self.engine.step()
                with torch.no_grad():
                    entropy = masked_mean(entropy_from_logits(logits), mask)
                    stats.add(mask, policy_loss=loss, entropy=entropy, **parts)
                    if index == 0:
                        ratio_error = torch.where(mask, (logp - old).exp() - 1, 0).abs().max()
                        stats.peak(first_minibatch_ratio_err=ratio_error)
        return stats.sums

    def save(self, folder: str) -> None:
        """This rank's engine states and random state into ``folder`` (collective over the pool)."""
        save_engine(self.engine, Path(folder), self.worker.rank)

    def load(self, folder: str) -> None:
        """Restore what ``save`` wrote."""
        load_engine(self.engine, Path(folder), self.worker.rank)

    def export(self, folder: str) -> None:
        """The policy in Hugging Face format into ``folder`` (belle.model.export; collective over the pool)."""
        from belle.model.export import export

        export(self.engine, self.job.model, self.job.method.lora, self.sampler.tokenizer, Path(folder))

    # a rollout pool of its own: RoleGroups.sync_weights calls these on every actor rank; rank 0 sends
    def open_sync(self, master_addr: str, master_port: int, world: int) -> None:
        """Rank 0 opens the sync group as its rank 0 (its TCPStore's host)."""
        if self.worker.rank == 0:
            self.sync = SyncGroup(master_addr, master_port, 0, world, self.job.cluster.collective_timeout_s,
                                  self.weights)

    def weight_buckets(self, bucket_mb: int) -> int:
        """Buckets of a sync."""
        return len(self.weights.buckets(bucket_mb))

    def send_bucket(self, index: int, bucket_mb: int) -> None:
        """Gather bucket ``index`` (every rank under ZeRO-3); rank 0 broadcasts it, LoRA merged in."""
        bucket = self.weights.buckets(bucket_mb)[index]
        with self.weights.gathered(bucket):
            if self.sync is not None:
                self.sync.broadcast(self.weights.pack(bucket, self.sync.device))

    def weights_digest(self) -> str:
        """SHA-256 of the weights a sync sends (collective: every rank)."""
        return self.weights.digest()


class Critic:
    """The value model: a score model's per-token values, trained on the clipped value loss; it starts from the
    reward model (critic_init=reward) or from the policy's weights with a fresh head (critic_init=policy)."""

    def __init__(self, job: JobConfig, worker: Worker):
        self.worker, self.ppo = worker, ppo_settings(job)
        self.block = roles_settings(job).critic
        optim = replace(job.optim, lr=self.ppo.critic_lr or job.optim.lr)
        self.engine = _trained_engine(job, "critic", optim, worker, SCORE)

    @torch.no_grad()
    def values(self, batch: dict) -> torch.Tensor:
        """[n, R] values of the response tokens (read at the position before each)."""
        return torch.cat([self._values(micro).cpu() for micro in micro_batches(batch, self.block.micro_batch)])

    def update(self, minibatches: list[dict]) -> dict[str, float]:
        """One optimizer step per mini-batch on the clipped value loss → summed stats."""
        stats = Stats()
        for minibatch in minibatches:
            micros = micro_batches(minibatch, self.block.micro_batch)
            for micro in micros:
                values = self._values(micro)
                mask, old, returns = (micro[k].to(values.device) for k in ("response_mask", "old_values", "returns"))
                loss, parts = value_loss(values, old, returns, mask, self.ppo.value_clip,
                                         token_count=minibatch["tokens"])
                self.engine.backward(loss * self.worker.world * len(micros))
                self.engine.step()
                stats.add(mask, value_loss=loss, **parts)
        return stats.sums

    def _values(self, micro: dict) -> torch.Tensor:
        length = micro["response_mask"].shape[1]
        return token_scores(self.engine, micro)[:, -length - 1:-1]

    def save(self, folder: str) -> None:
        """As Policy.save."""
        save_engine(self.engine, Path(folder), self.worker.rank)

    def load(self, folder: str) -> None:
        """As Policy.load."""
        load_engine(self.engine, Path(folder), self.worker.rank)


class Frozen:
    """A model that only answers forward passes: the reference policy (log-probs) or the reward model (scores)."""

    def __init__(self, job: JobConfig, worker: Worker, role: str):
        self.ppo, self.block = ppo_settings(job), roles_settings(job).block(role)
        self.model = _frozen_model(job, role, worker, SCORE if role == "reward" else CAUSAL_LM)

    @torch.no_grad()
    def log_probs(self, batch: dict) -> torch.Tensor:
        """[n, R] log-probs of the response tokens, at the sampling temperature."""
        micros = micro_batches(batch, self.block.micro_batch)
        return torch.cat([response_log_probs(self.model, micro, self.ppo.temperature)[0].cpu() for micro in micros])

    @torch.no_grad()
    def score(self, batch: dict) -> torch.Tensor:
        """[n] the reward model's score of each response, read at its last token (the EOS when it ended)."""
        out = []
        for micro in micro_batches(batch, self.block.micro_batch):
            mask = micro["response_mask"]
            last = mask.shape[1] - 1 - mask.flip(1).int().argmax(1)
            scores = token_scores(self.model, micro)[:, -mask.shape[1]:].cpu()
            out.append(scores[torch.arange(len(last)), last])
        return torch.cat(out)


class Rollout:
    """A rollout pool of its own (roles.rollout.engine=hf): a plain Hugging Face causal LM of the actor's model, no
    optimizer. It samples as the actor does, with the weights of its last sync, whose version it reports."""

    def __init__(self, job: JobConfig, worker: Worker):
        self.job, self.worker = job, worker
        self.sampler = Sampler(job, worker.rank)
        self.model = _inference_model(job, role_model(job, "actor"), worker, CAUSAL_LM).to(_local_device())
        self.weights, self.sync = WeightStream(self.model), None
        self.version: int | None = None
        """The step whose weights it holds; None before the first sync completes."""

    def generate(self, prompts: list[list[int]], step: int) -> dict:
        """``Sampler.sample``'s responses, and the weights version they come from."""
        return {"responses": self.sampler.sample(self.model, prompts, step, _device(self.model)),
                "version": self.version}

    def open_sync(self, master_addr: str, master_port: int, world: int) -> None:
        """Join the sync group as its rank 1 + this rank."""
        self.sync = SyncGroup(master_addr, master_port, 1 + self.worker.rank, world,
                              self.job.cluster.collective_timeout_s, self.weights)

    def receive_bucket(self, index: int, bucket_mb: int, version: int, last: bool) -> int | None:
        """Take bucket ``index`` from actor rank 0 into the model → the version held: ``version`` after the last
        bucket, None while a sync is under way."""
        bucket = self.weights.buckets(bucket_mb)[index]
        data = torch.empty(sum(t.nbytes for t in bucket), dtype=torch.uint8, device=self.sync.device)
        self.sync.broadcast(data)
        self.weights.unpack(bucket, data)
        self.version = version if last else None
        return self.version

    def weights_digest(self) -> str:
        """SHA-256 of the weights held, as Policy.weights_digest."""
        return self.weights.digest()


ROLE_CLASSES = {"actor": Policy, "critic": Critic, "reference": Frozen, "reward": Frozen, "rollout": Rollout}


def build_role(role: str, job: JobConfig, worker: Worker):
    """The object of ``role`` for this process."""
    cls = ROLE_CLASSES[role]
    return cls(job, worker, role) if cls is Frozen else cls(job, worker)


# --- shared pieces: batches, forward inputs, engines, checkpoints, stats ---------------------------------------------


class Sampler:
    """How PPO samples responses (method.ppo's temperature and top_p, up to max_new_tokens, the tokenizer's pad
    and EOS) in this rank: shared by Policy and Rollout."""

    def __init__(self, job: JobConfig, rank: int):
        from transformers import GenerationConfig

        from belle.data.template import pad_id
        from belle.model.load import load_tokenizer

        ppo = ppo_settings(job)
        self.seed, self.rank, self.tokenizer = job.train.seed, rank, load_tokenizer(job.model)
        self.pad = pad_id(self.tokenizer)
        self.config = GenerationConfig(
            do_sample=True, temperature=ppo.temperature, top_p=ppo.top_p, top_k=0, max_new_tokens=ppo.max_new_tokens,
            pad_token_id=self.pad, eos_token_id=self.tokenizer.eos_token_id,
        )

    @torch.no_grad()
    def sample(self, module, prompts: list[list[int]], step: int, device, synced_gpus: bool = False) -> list[list[int]]:
        """One response per prompt by ``module`` (token ids, as generated: up to max_new_tokens, pad after an EOS).
        The RNG is reseeded from (seed, step, rank), so a resumed step samples the same tokens."""
        torch.manual_seed(step_seed(self.seed, step, self.rank))
        batch = left_pad(prompts, self.pad)
        with _generating(module):
            out = module.generate(**{k: v.to(device) for k, v in batch.items()}, generation_config=self.config,
                                  synced_gpus=synced_gpus)
        return out[:, batch["input_ids"].shape[1]:].tolist()


def left_pad(prompts: list[list[int]], pad: int) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` of prompts left-padded to the longest."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt):] = 1
    return {"input_ids": ids, "attention_mask": mask}


def micro_batches(batch: dict, size: int) -> list[dict]:
    """``batch``'s rows in slices of ``size`` (the last may be shorter); scalars (``tokens``) go to each."""
    rows = len(batch["input_ids"])
    return [{k: v[i:i + size] if torch.is_tensor(v) and v.dim() else v for k, v in batch.items()}
            for i in range(0, rows, size)]


def model_inputs(micro: dict, device) -> dict[str, torch.Tensor]:
    """Forward inputs of a left-padded micro-batch: positions count real tokens only, as in generation, so a padded
    row gives the same outputs as the row alone."""
    mask = micro["attention_mask"].to(device)
    return {"input_ids": micro["input_ids"].to(device), "attention_mask": mask,
            "position_ids": (mask.cumsum(-1) - 1).clamp_min(0)}


def response_log_probs(model, micro: dict, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs [m, R] of a micro-batch's response tokens by a causal LM (an engine or a plain module), and the
    detached temperature-scaled logits [m, R, vocab] they come from."""
    length = micro["response_mask"].shape[1]
    logits = model(**model_inputs(micro, _device(model)), use_cache=False).logits
    logits = logits[:, -length - 1:-1].float() / temperature
    return log_probs_from_logits(logits, micro["input_ids"][:, -length:].to(logits.device)), logits.detach()


def token_scores(model, micro: dict) -> torch.Tensor:
    """[m, P + R] float32 per-token outputs of a score model's head (its ``score`` layer, caught by a hook: the
    model's own forward, ZeRO-3 gathers included, keeps only the last token's)."""
    root = model.module if hasattr(model, "module") else model
    head = min(((name, m) for name, m in root.named_modules() if name.rpartition(".")[2] == "score"),
               key=lambda item: len(item[0]))[1]
    caught = []
    handle = head.register_forward_hook(lambda module, args, out: caught.append(out))
    try:
        model(**model_inputs(micro, _device(model)), use_cache=False)
    finally:
        handle.remove()
    return caught[0].squeeze(-1).float()


@contextmanager
def _generating(module):
    """Eval mode around ``generate`` only: under activation checkpointing HF drops the KV cache in training mode."""
    was_training = module.training
    module.train(False)
    try:
        yield
    finally:
        module.train(was_training)


def _device(model) -> torch.device:
    return model.device if hasattr(model, "device") else next(model.parameters()).device


def _role_strategy(job: JobConfig, role: str, world: int):
    """strategy for ``role``: its ZeRO stage, offload and micro-batch; a trained role takes one optimizer step per
    mini-batch."""
    block, stage = roles_settings(job).block(role), zero_stage(job, role)
    trained = role in TRAINED_ROLES
    return replace(job.strategy, zero_stage=stage, micro_batch=block.micro_batch,
                   global_batch=ppo_settings(job).mini_batch if trained else block.micro_batch * world,
                   offload_optimizer=block.offload and stage > 0,
                   offload_params=block.offload and stage == 3, compile=job.strategy.compile and stage < 3)


def _no_dropout(module) -> None:
    """Dropout p=0 everywhere (layers and attention), so a forward in training mode is deterministic."""
    for sub in module.modules():
        if isinstance(sub, torch.nn.Dropout):
            sub.p = 0.0
        if hasattr(sub, "attention_dropout"):
            sub.attention_dropout = 0.0


def _trained_engine(job: JobConfig, role: str, optim, worker: Worker, task: str):
    """A DeepSpeed engine with its optimizer (LoRA adapters under method.lora), dropout off, in training mode."""
    from belle.strategy.engine import build_engine

    ppo = ppo_settings(job)
    steps = worker.steps - (ppo.critic_warmup_steps if role == "actor" else 0)  # the actor waits for the critic
    engine = build_engine(role_model(job, role), _role_strategy(job, role, worker.world), optim, job.method.lora,
                          attention=worker.attention, world_size=worker.world, seed=job.train.seed, task=task,
                          total_steps=max(1, steps) * ppo.epochs * ppo.sequences // ppo.mini_batch)
    _no_dropout(engine.module)
    engine.train()
    return engine


def _frozen_model(job: JobConfig, role: str, worker: Worker, task: str):
    """A frozen model: under ZeRO-3 a DeepSpeed engine without optimizer (partitioned as it is built), else the
    whole model on this process's device."""
    import deepspeed

    from belle.strategy.deepspeed import deepspeed_config
    from belle.strategy.engine import partitioned_build

    strategy = _role_strategy(job, role, worker.world)
    config = {k: v for k, v in deepspeed_config(strategy, job.optim, worker.world).items() if k != "optimizer"}
    zero3 = strategy.zero_stage == 3
    with partitioned_build(config) if zero3 else nullcontext():
        net = _inference_model(job, role_model(job, role), worker, task)
    if zero3:
        return deepspeed.initialize(model=net, config=config)[0]
    return net.to(_local_device())


def _inference_model(job: JobConfig, model, worker: Worker, task: str):
    """``model`` built for inference in strategy.precision: no gradients, no dropout."""
    from belle.model.load import build_model
    from belle.strategy.engine import DTYPES

    dtype = getattr(torch, DTYPES[job.strategy.precision])
    net = build_model(model, worker.attention, dtype=dtype, seed=job.train.seed, task=task)
    net.requires_grad_(False)
    _no_dropout(net)
    return net


def _local_device() -> torch.device:
    """This process's GPU, else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def save_engine(engine, folder: Path, rank: int) -> None:
    """``engine``'s states (DeepSpeed shards) and this rank's random state into ``folder``."""
    engine.save_checkpoint(str(folder), tag=CHECKPOINT_TAG)
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    torch.save(rng, folder / f"rng-rank{rank}.pt")


def load_engine(engine, folder: Path, rank: int) -> None:
    """Restore what ``save_engine`` wrote."""
    engine.load_checkpoint(str(folder), tag=CHECKPOINT_TAG)
    rng = torch.load(folder / f"rng-rank{rank}.pt")
    torch.set_rng_state(rng["torch"])
    if torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])


class Stats:
    """An update's stats as sums the driver merges over ranks (``merge``): losses summed as they are (each is
    already a share of its mini-batch's loss), token means weighted by the tokens, ``peak`` values as maxima."""

    LOSSES = ("policy_loss", "value_loss")

    def __init__(self) -> None:
        self.sums: dict[str, float] = {"tokens": 0.0}

    def add(self, mask: torch.Tensor, **values: torch.Tensor) -> None:
        tokens = float(mask.sum())
        self.sums["tokens"] += tokens
        for name, value in values.items():
            weight = 1.0 if name in self.LOSSES else tokens
            self.sums[name] = self.sums.get(name, 0.0) + float(value.detach()) * weight

    def peak(self, **values: torch.Tensor) -> None:
        for name, value in values.items():
            self.sums[f"max:{name}"] = max(self.sums.get(f"max:{name}", 0.0), float(value.detach()))


def merge(results: list[dict[str, float]], minibatches: int) -> dict[str, float]:
    """One rank-merged record from every rank's ``Stats.sums``: losses per mini-batch, token means, maxima."""
    tokens = sum(r["tokens"] for r in results)
    merged = {}
    for name in results[0]:
        if name.startswith("max:"):
            merged[name[4:]] = max(r[name] for r in results)
        elif name != "tokens":
            total = sum(r[name] for r in results)
            merged[name] = total / (minibatches if name in Stats.LOSSES else tokens)
    return merged
