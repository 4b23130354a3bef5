"""Training: the loop (trainer.py) runs one step (step.py) and calls its hooks (hooks.py: metrics,
checkpoints, periodic evaluation, the TAG probe); setup.py builds the parts from the config,
state.py saves and restores them, checkpoint.py writes the files."""
