"""Back-of-the-envelope memory and time per GPU for a job, from architecture numbers alone.

Model states follow the ZeRO paper's accounting (16-bit weights and gradients, fp32 master weights and Adam moments,
each sharded by stage); activations are belle.model.memory's (memory-efficient attention, LLaMA-style blocks);
a fixed allowance covers the CUDA context and allocator slack. Good to ~10-20%: enough to tell fits from does-not-fit.
"""

from dataclasses import dataclass

from belle.config import JobConfig
from belle.config.hardware import GIB, GPU_TYPES, OVERHEAD_GIB
from belle.data.facts import DataFacts, token_counts
from belle.model.anatomy import anatomy
from belle.model.memory import activation_bytes
from belle.monitor.flops import model_flops_per_token
from belle.strategy.deepspeed import COMM_BUCKET


@dataclass(frozen=True)
class Memory:
    weights: float
    gradients: float
    optimizer: float
    zero3_working_set: float
    comm_buckets: float
    activations: float
    logits: float
    overhead: float

    @property
    def total(self) -> float:
        return sum(vars(self).values())

    def gib(self) -> dict[str, float]:
        """Every part and the total in GiB, rounded for plan.json."""
        return {k: round(v / GIB, 2) for k, v in {**vars(self), "total": self.total}.items()}


def memory_per_gpu(job: JobConfig, total: int, trainable: int, largest_layer: int,
                   outputs: int | None = None) -> Memory:
    """Bytes each GPU holds at the peak of a training step; ``outputs`` per token of the model's head (None: the
    vocabulary; a reward model's score head has 1)."""
    s, m = job.strategy, job.model
    world = job.cluster.world_size
    half = s.precision != "fp32"
    w_bytes = 2 if half else 4
    opt_bytes = 12 if half else 8  # fp32 master copy + Adam m and v; no master copy in fp32
    shard = {  # which model states ZeRO shards at each stage
        0: (1, 1, 1), 1: (1, 1, world), 2: (1, world, world), 3: (world, world, world),
    }[s.zero_stage]
    weights = 0.0 if s.offload_params else w_bytes * total / shard[0]
    working_set = 2 * w_bytes * largest_layer if s.zero_stage == 3 else 0.0  # current + prefetched layer
    tokens = s.micro_batch * job.data.max_length * (2 if job.data.pairs else 1)  # a pair: chosen and rejected
    outputs = m.vocab_size if outputs is None else outputs
    activations = activation_bytes(m, tokens, s.activation_checkpointing)
    return Memory(
        weights=weights,
        gradients=w_bytes * trainable / shard[1],
        optimizer=0.0 if s.offload_optimizer else opt_bytes * trainable / shard[2],
        zero3_working_set=working_set,
        comm_buckets=_comm_buckets(s.zero_stage, w_bytes) if job.cluster.use_gpu else 0.0,
        activations=float(activations),
        logits=float(tokens * outputs * 10),  # 16-bit logits, fp32 upcast and its gradient
        overhead=OVERHEAD_GIB * GIB if job.cluster.use_gpu else 0.0,
    )


def _comm_buckets(stage: int, w_bytes: int) -> float:
    """ZeRO's communication buffers of belle.strategy.deepspeed.COMM_BUCKET elements: two reduce buckets alive with
    overlap_comm (ZeRO-2/3) or one (ZeRO-1), plus the all-gather bucket of ZeRO-1/2."""
    reduce = {0: 0, 1: 1, 2: 2, 3: 2}[stage]
    allgather = 1 if stage in (1, 2) else 0
    return float((reduce + allgather) * COMM_BUCKET * w_bytes)


def flops_per_token(job: JobConfig, matmul_params: int) -> float:
    """Model FLOPs per trained token of ``job``: the definition the logged MFU uses, so cluster.mfu can be set
    from a real run's metrics."""
    m = job.model
    return model_flops_per_token(
        matmul_params, m.num_layers, m.hidden_size, job.data.max_length, lora=job.method.lora is not None
    )


def hours_per_epoch(job: JobConfig, matmul_params: int, tokens_per_epoch: float) -> float | None:
    """Estimated hours for one pass over the data on the job's GPUs at MFU cluster.mfu; None for CPU workers."""
    if not job.cluster.use_gpu:
        return None
    peak = GPU_TYPES[job.cluster.gpu_type][0] * 1e12
    throughput = job.cluster.world_size * peak * job.cluster.mfu
    return flops_per_token(job, matmul_params) * tokens_per_epoch / throughput / 3600


def planned_hours(job: JobConfig, facts: DataFacts) -> float | None:
    """The plan's hours per epoch (hours_per_epoch) over the job's data: None while its tokens are unknown, and for
    CPU workers."""
    _, tokens_per_epoch = token_counts(facts, job.data)
    return hours_per_epoch(job, anatomy(job.model).matmul_params, tokens_per_epoch) if tokens_per_epoch else None


def gpu_memory_gib(job: JobConfig) -> float:
    """Memory of one GPU of the job's type."""
    return GPU_TYPES[job.cluster.gpu_type][1]
