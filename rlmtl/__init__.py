"""rlmtl: multi-task behaviour cloning for robot manipulation with pluggable loss weighting."""

__version__ = "0.1.0"
