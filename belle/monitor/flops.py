"""FLOPs per trained token, shared by the plan's time estimate and the MFU metric of a running job."""


def forward_flops_per_token(total_params: int, num_layers: int, hidden_size: int, seq_len: int) -> float:
    """One forward pass: 2 FLOPs per weight, plus causal attention scores and mixing (half of 4·h·s per layer)."""
    return 2 * total_params + 2 * num_layers * hidden_size * seq_len


def model_flops_per_token(total_params: int, num_layers: int, hidden_size: int, seq_len: int, lora: bool) -> float:
    """Model FLOPs of a training step (the MFU convention, no recompute): forward + backward, where backward is
    twice the forward, or once under LoRA (no weight gradients for frozen weights)."""
    return (2 if lora else 3) * forward_flops_per_token(total_params, num_layers, hidden_size, seq_len)


def hardware_flops_per_token(
    total_params: int, num_layers: int, hidden_size: int, seq_len: int, lora: bool, recompute: bool
) -> float:
    """What the devices actually compute: model FLOPs plus a second forward when activations are recomputed."""
    forward = forward_flops_per_token(total_params, num_layers, hidden_size, seq_len)
    return (2 if lora else 3) * forward + (forward if recompute else 0.0)
