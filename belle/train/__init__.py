"""Training-loop pieces every recipe shares (no Ray here either)."""
