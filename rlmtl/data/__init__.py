"""Datasets: the HDF5 multi-task demo format, statistics and the task-balanced sampler."""
