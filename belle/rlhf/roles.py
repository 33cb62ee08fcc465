"""PPO's trained and frozen roles as plain objects, one per process and role (belle.rlhf.host builds and hosts those
of a pool): ``Policy`` (the actor), ``Critic`` and ``Frozen`` (the reference policy, or the reward model). A rollout
pool of its own is belle.rlhf.rollout.

A batch is a dict of CPU tensors for n sequences of a prompt left-padded to P tokens and a response right-padded
to R: ``input_ids`` and ``attention_mask`` [n, P + R], ``response_mask`` [n, R] (true on response tokens up to and
with the EOS). Per-token outputs are [n, R] (belle.rlhf.forward). Updates take this rank's shards of the step's
mini-batches, each with the mini-batch's global response-token count ``tokens``: a loss is a token sum over that
count, so every rank and micro-batch split gives the same gradient.

Trained models have dropout p=0, so a first mini-batch's ratio is 1; ``model.eval()`` is never used for their
forward passes (it would also switch activation checkpointing off), only around ``generate``, whose KV cache
activation checkpointing would drop.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from belle.config import JobConfig
from belle.config.ppo import TRAINED_ROLES, ppo_settings, role_model, roles_settings, zero_stage
from belle.model.generate import Sampler
from belle.model.heads import CAUSAL_LM, SCORE
from belle.rlhf.batch import Stats, micro_batches
from belle.rlhf.forward import response_log_probs, token_scores
from belle.rlhf.ppo_losses import entropy_from_logits, masked_mean, policy_loss, value_loss
from belle.rlhf.weight_sync import SyncGroup, WeightStream
from belle.strategy.engine import build_engine, build_frozen, generating, no_dropout
from belle.train.state import load_engine, save_engine


@dataclass(frozen=True)
class Worker:
    """Where a role runs: its rank in its pool's world, the world size, and the attention implementation."""

    rank: int
    world: int
    attention: str
    steps: int
    """PPO steps of the run (a trained role's learning-rate schedule spans its optimizer steps over them)."""


def ppo_sampler(job: JobConfig, rank: int) -> Sampler:
    """How PPO samples on this rank (method.ppo's temperature, top_p and max_new_tokens, seeded by train.seed): the
    actor's and a rollout pool's."""
    from belle.model.load import load_tokenizer

    ppo = ppo_settings(job)
    return Sampler(load_tokenizer(job.model), temperature=ppo.temperature, top_p=ppo.top_p,
                   max_new_tokens=ppo.max_new_tokens, seed=job.train.seed, rank=rank)


class Policy:
    """The actor: a causal LM engine (full or LoRA) that generates, gives log-probs and trains on the clipped policy
    loss. With LoRA its adapters switched off are the reference policy."""

    def __init__(self, job: JobConfig, worker: Worker):
        self.job, self.worker, self.ppo = job, worker, ppo_settings(job)
        self.block = roles_settings(job).actor
        self.engine = _trained_engine(job, "actor", job.optim, worker, CAUSAL_LM)
        self.sampler = ppo_sampler(job, worker.rank)
        self.weights, self.sync = WeightStream(self.engine.module), None

    def generate(self, prompts: list[list[int]], step: int) -> list[list[int]]:
        """``Sampler.sample``'s responses, by the actor's own weights (an hf rollout in the actor's pool); under
        ZeRO-3 as belle.strategy.engine.generating says (roles.rollout.gather_weights)."""
        with generating(self.engine, roles_settings(self.job).rollout.gather_weights) as (module, synced_gpus):
            return self.sampler.sample(module, prompts, step, self.engine.device, synced_gpus=synced_gpus)

    @torch.no_grad()
    def log_probs(self, batch: dict, adapters: bool = True) -> torch.Tensor:
        """[n, R] log-probs of the response tokens; ``adapters=False``: of the LoRA base (the reference)."""
        micros = micro_batches(batch, self.block.micro_batch)
        with nullcontext() if adapters else self.engine.module.disable_adapter():
            return torch.cat([response_log_probs(self.engine, m, self.ppo.temperature)[0].cpu() for m in micros])

    def update(self, minibatches: list[dict]) -> dict[str, float]:
        """One optimizer step per mini-batch on the clipped policy loss → summed stats (belle.rlhf.batch.merge)."""
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
        self.model = build_frozen(role_model(job, role), _role_strategy(job, role, worker.world), job.optim,
                                  attention=worker.attention, world_size=worker.world, seed=job.train.seed,
                                  task=SCORE if role == "reward" else CAUSAL_LM)

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


def _role_strategy(job: JobConfig, role: str, world: int):
    """strategy for ``role``: its ZeRO stage, offload and micro-batch; a trained role takes one optimizer step per
    mini-batch."""
    block, stage = roles_settings(job).block(role), zero_stage(job, role)
    trained = role in TRAINED_ROLES
    return replace(job.strategy, zero_stage=stage, micro_batch=block.micro_batch,
                   global_batch=ppo_settings(job).mini_batch if trained else block.micro_batch * world,
                   offload_optimizer=block.offload and stage > 0,
                   offload_params=block.offload and stage == 3, compile=job.strategy.compile and stage < 3)


def _trained_engine(job: JobConfig, role: str, optim, worker: Worker, task: str):
    """A DeepSpeed engine with its optimizer (LoRA adapters under method.lora), dropout off, in training mode."""
    ppo = ppo_settings(job)
    steps = worker.steps - (ppo.critic_warmup_steps if role == "actor" else 0)  # the actor waits for the critic
    engine = build_engine(role_model(job, role), _role_strategy(job, role, worker.world), optim, job.method.lora,
                          attention=worker.attention, world_size=worker.world, seed=job.train.seed, task=task,
                          total_steps=max(1, steps) * ppo.epochs * ppo.sequences // ppo.mini_batch)
    no_dropout(engine.module)
    engine.train()
    return engine
