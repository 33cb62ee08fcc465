"""RLHF pieces that need no Ray: losses, experience, rule rewards."""
