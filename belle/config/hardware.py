"""Facts about the hardware that checks and plans share: GPU types and the units of memory estimates."""

# Peak dense bf16/fp16 tensor throughput (TFLOP/s) and memory (GiB) per GPU type, for plans.
GPU_TYPES = {
    "A100-40GB": (312.0, 40.0),
    "A100-80GB": (312.0, 80.0),
    "H100-80GB": (989.0, 80.0),
    "H200-141GB": (989.0, 141.0),
    "A800-80GB": (312.0, 80.0),
    "V100-32GB": (125.0, 32.0),
}
PRE_AMPERE = frozenset({"V100-32GB"})
"""GPU types below sm80: no bf16, no FlashAttention kernels (auto attention resolves to sdpa)."""

GIB = 1024**3
OVERHEAD_GIB = 2.0
"""CUDA context, NCCL buffers and allocator fragmentation (assumed)."""
