"""Evaluation: seeded headless rollouts of a checkpoint in a crash-surviving process pool
(evaluate.py), typed results and tables (results.py), episode logs for resume (episode_log.py),
sharding over torchrun ranks (shard.py), videos (videos.py) and the CI gate (gate.py)."""
