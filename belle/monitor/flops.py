"""FLOPs per trained token: one definition for the plan's time estimate and the MFU metric of a running job.

Model FLOPs (the MFU convention): 2 per matmul weight per token forward (the input embedding is a lookup and does
none, unless tied to the output projection), plus causal attention scores and mixing over ``seq_len``; backward is
twice the forward, or once under LoRA (no weight gradients for frozen weights). Recomputed activations are not
counted. ``seq_len`` is the row length: with packed rows attention spans only each sample, so for BELLE's short
samples this overstates attention work (a few percent at 7B and 2048 tokens): MFU reads slightly high, the same way
in the plan and the metrics.
"""


def forward_flops_per_token(matmul_params: int, num_layers: int, hidden_size: int, seq_len: int) -> float:
    """One forward pass: 2 FLOPs per matmul weight, plus causal attention scores and mixing (half of 4·h·s per
    layer)."""
    return 2 * matmul_params + 2 * num_layers * hidden_size * seq_len


def model_flops_per_token(matmul_params: int, num_layers: int, hidden_size: int, seq_len: int, lora: bool) -> float:
    """Model FLOPs of a training step per trained token: forward and backward."""
    return (2 if lora else 3) * forward_flops_per_token(matmul_params, num_layers, hidden_size, seq_len)
