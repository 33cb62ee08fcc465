"""Training metrics, W&B, progress and the loss plot."""
