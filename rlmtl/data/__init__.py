"""Data: the dataset format (dataset.py), task-balanced batches (sampler.py), keyframes of a demo
(keyframes.py), expert demo collection (collect.py, resumable through attempt_journal.py) and RLBench dataset import (import_rlbench.py)."""
