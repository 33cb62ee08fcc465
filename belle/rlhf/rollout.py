"""PPO's rollout pool of its own (roles.rollout.engine=hf): a plain Hugging Face causal LM of the actor's model, no
optimizer, fed the actor's weights by belle.rlhf.weight_sync. In the actor's pool the actor generates itself."""

from __future__ import annotations

import torch

from belle.config import JobConfig
from belle.config.ppo import role_model
from belle.model.heads import CAUSAL_LM
from belle.rlhf.roles import Worker, ppo_sampler
from belle.rlhf.weight_sync import SyncGroup, WeightStream
from belle.strategy.engine import inference_model, local_device


class Rollout:
    """One rank of the rollout pool. It samples as the actor does, with the weights of its last sync, whose version
    it reports."""

    def __init__(self, job: JobConfig, worker: Worker):
        self.job, self.worker = job, worker
        self.sampler = ppo_sampler(job, worker.rank)
        self.device = local_device()
        self.model = inference_model(role_model(job, "actor"), job.strategy.precision, attention=worker.attention,
                                     seed=job.train.seed, task=CAUSAL_LM).to(self.device)
        self.weights, self.sync = WeightStream(self.model), None
        self.version: int | None = None
        """The step whose weights it holds; None before the first sync completes."""

    def generate(self, prompts: list[list[int]], step: int) -> dict:
        """``Sampler.sample``'s responses, and the weights version they come from."""
        return {"responses": self.sampler.sample(self.model, prompts, step, self.device), "version": self.version}

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
