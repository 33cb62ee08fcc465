"""What every training process shares below the recipes, with no Ray: its start (worker), the loop pieces (loop)
and an engine's state in a checkpoint (state)."""
