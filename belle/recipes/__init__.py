"""Training recipes: one file per method, read top to bottom (setup, loop, save)."""
