"""The actor's weights for a rollout pool of its own, driven by launcher/backends/pool_calls.py's
RoleGroups.sync_weights.

``WeightStream``: a causal LM's weights as a plain Hugging Face model of its architecture names them (LoRA merged,
W + s·BA; modules_to_save: the trained copy), in the model's parameter order, cut into buckets of whole tensors;
under ZeRO-3 each bucket is gathered on its own, so a sync holds one bucket at a time. ``SyncGroup``: the process
group {actor rank 0 (sync rank 0), rollout rank r (1 + r)} over a TCPStore of actor rank 0, outside both pools'
torch.distributed worlds (gloo on CPU, NCCL on GPU); actor rank 0 broadcasts each bucket as bytes over it.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from belle.config._checks import require

ADAPTER = "default"
"""The LoRA adapter's name (belle.model.lora)."""


@dataclass(frozen=True)
class SyncedTensor:
    """One weight of the plain model: its name, and the parameters it is computed from (its own, plus the LoRA
    layer's adapters, merged in)."""

    name: str
    params: tuple[torch.nn.Parameter, ...]
    lora: torch.nn.Module | None

    @property
    def shape(self) -> torch.Size:
        return getattr(self.params[0], "ds_shape", self.params[0].shape)  # ZeRO-3 keeps the full shape aside

    @property
    def nbytes(self) -> int:
        return self.shape.numel() * self.params[0].element_size()

    def value(self) -> torch.Tensor:
        """The weight (inside the gather of its parameters under ZeRO-3)."""
        weight = self.params[0].detach()
        return weight if self.lora is None else weight + self.lora.get_delta_weight(ADAPTER).to(weight.dtype)


class WeightStream:
    """``model``'s weights in sync order (``model``: a plain or PEFT causal LM, a ZeRO-3 one included)."""

    def __init__(self, model):
        self.tensors = _synced_tensors(model)
        self._buckets: dict[int, list[list[SyncedTensor]]] = {}

    def buckets(self, bucket_mb: int) -> list[list[SyncedTensor]]:
        """The tensors in buckets of at most ``bucket_mb`` MB (a larger tensor alone), in order."""
        if bucket_mb not in self._buckets:
            limit, buckets, size = bucket_mb * 2**20, [[]], 0
            for tensor in self.tensors:
                if buckets[-1] and size + tensor.nbytes > limit:
                    buckets.append([])
                    size = 0
                buckets[-1].append(tensor)
                size += tensor.nbytes
            self._buckets[bucket_mb] = buckets
        return self._buckets[bucket_mb]

    @contextmanager
    def gathered(self, bucket: list[SyncedTensor]) -> Iterator[None]:
        """Whole parameters of ``bucket`` within (a collective over the model's ZeRO-3 world; else nothing)."""
        import deepspeed

        with deepspeed.zero.GatheredParameters([p for tensor in bucket for p in tensor.params]):
            yield

    def pack(self, bucket: list[SyncedTensor], device: torch.device) -> torch.Tensor:
        """``bucket``'s values as one flat byte tensor on ``device`` (within ``gathered``)."""
        return torch.cat([tensor.value().reshape(-1).view(torch.uint8).to(device) for tensor in bucket])

    def unpack(self, bucket: list[SyncedTensor], data: torch.Tensor) -> None:
        """Copy what ``pack`` made into ``bucket``'s parameters (a plain model's)."""
        offset = 0
        for tensor in bucket:
            param = tensor.params[0]
            chunk = data[offset:offset + tensor.nbytes].clone()  # a copy starts aligned for any dtype
            param.data.copy_(chunk.view(param.dtype).view(param.shape))
            offset += tensor.nbytes

    def digest(self, bucket_mb: int = 512) -> str:
        """SHA-256 of the weights' bytes in sync order (collective under ZeRO-3: call it on every rank)."""
        digest = hashlib.sha256()
        for bucket in self.buckets(bucket_mb):
            with self.gathered(bucket):
                digest.update(self.pack(bucket, torch.device("cpu")).numpy().tobytes())
        return digest.hexdigest()

    def layout(self) -> torch.Tensor:
        """32 bytes naming every tensor's name, shape and dtype in order: equal streams have equal layouts."""
        lines = "\n".join(f"{t.name} {tuple(t.shape)} {t.params[0].dtype}" for t in self.tensors)
        return torch.frombuffer(bytearray(hashlib.sha256(lines.encode()).digest()), dtype=torch.uint8)


def _synced_tensors(model) -> list[SyncedTensor]:
    """The plain model's weights from ``model``'s parameters: a LoRA layer's base weight gets its adapters merged
    in, the adapters themselves and the frozen originals of modules_to_save are left out."""
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    root = model.get_base_model() if isinstance(model, PeftModel) else model
    layers = {name: module for name, module in root.named_modules() if isinstance(module, LoraLayer)}
    tensors = []
    for name, param in root.named_parameters():
        if ".lora_" in name or ".original_module." in name:
            continue
        lora = layers.get(name.removesuffix(".base_layer.weight")) if name.endswith(".base_layer.weight") else None
        adapters = (lora.lora_A[ADAPTER].weight, lora.lora_B[ADAPTER].weight) if lora else ()
        plain = name.replace(".base_layer.", ".").replace(f".modules_to_save.{ADAPTER}.", ".")
        tensors.append(SyncedTensor(plain, (param, *adapters), lora))
    return tensors


class SyncGroup:
    """This process's place in the sync group; actor rank 0 (sync rank 0) hosts its TCPStore. Opening it checks
    that both sides stream the same layout."""

    def __init__(self, master_addr: str, master_port: int, rank: int, world: int, timeout_s: float,
                 stream: WeightStream):
        import torch.distributed as dist

        timeout = datetime.timedelta(seconds=timeout_s)
        store = dist.PrefixStore("weights", dist.TCPStore(master_addr, master_port, world, rank == 0,
                                                          timeout=timeout))
        if torch.cuda.is_available():
            self.device = torch.device("cuda", torch.cuda.current_device())
            options = dist.ProcessGroupNCCL.Options()
            options._timeout = timeout
            self.group = dist.ProcessGroupNCCL(store, rank, world, options)
        else:
            self.device = torch.device("cpu")
            self.group = dist.ProcessGroupGloo(store, rank, world, timeout)
        mine = stream.layout().to(self.device)
        sent = mine.clone()
        self.broadcast(sent)
        require(torch.equal(mine, sent), f"sync rank {rank}: the actor's weights are named, shaped or typed unlike "
                                         "this rollout's model: build both from role_model(job, 'actor') with "
                                         "strategy.precision")

    def broadcast(self, data: torch.Tensor) -> None:
        """``data`` from sync rank 0 to every rank, in place."""
        self.group.broadcast(data, 0).wait()
