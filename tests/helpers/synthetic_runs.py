"""Synthetic runs without a simulator: a metaworld-shaped dataset and configs that train on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from rlmtl.data.dataset import Episode, TaskRecord, write_dataset

TASKS = ["reach-v3", "push-v3", "drawer-close-v3"]
STEPS = 3
# parameters that make each method's weights move visibly within STEPS steps; tolerances: Adam divides by
# sqrt(v), so float32 rounding of a mean over 2 half-batches vs 1 batch can grow to ~1e-5 in 3 steps (lr 1e-3)
# run name -> (weighting name, params)
METHODS = {
    "uniform": ("uniform", {}),
    "famo": ("famo", {"w_lr": 0.5}),
    # "held": the exact Jacobian of Adam's very first step is ~0, which leaves the meta-gradient to rounding
    # noise; fd_radius 1: the finite difference of float32 losses at radius 0.01 cancels to ~1% noise
    "auto_lambda": ("auto_lambda", {"meta_lr": 0.05, "jacobian": "held", "fd_radius": 1.0}),
    "auto_lambda_real": ("auto_lambda", {"meta_lr": 0.05, "jacobian": "held", "fd_radius": 1.0, "lookahead": "real"}),
    "pcgrad": ("pcgrad", {}),
}


def write_tiny_dataset(path: Path, tasks: list[str] = TASKS, seed: int = 0, image_size: int = 0) -> Path:
    """A synthetic metaworld-shaped dataset (39-dim state, 4-dim actions; with `image_size`, also
    `rgb_corner` frames): no simulator needed."""
    rng = np.random.default_rng(seed)
    records = []
    for index, task in enumerate(tasks):
        episodes = []
        for demo in range(2):
            length = 12 + demo
            state = rng.normal(size=(length, 39)).astype(np.float32)
            actions = np.tanh(state[:, :4] * (index + 1) + rng.normal(scale=0.3, size=(length, 4))).astype(np.float32)
            observations = {"state": state, "proprio": state[:, :4].copy()}
            if image_size:
                observations["rgb_corner"] = rng.integers(0, 256, (length, image_size, image_size, 3), dtype=np.uint8)
            success = np.arange(length) == length - 1
            episodes.append(Episode(observations, actions, np.zeros(length, np.float32), success, 1000 + demo, demo))
        records.append(TaskRecord(task, index, episodes, 2, 2))
    spec = {"state": {"shape": [39], "dtype": "float32"}, "proprio": {"shape": [4], "dtype": "float32"}}
    if image_size:
        spec["rgb_corner"] = {"shape": [image_size, image_size, 3], "dtype": "uint8"}
    attrs = {
        "backend": "metaworld",
        "suite": "mt10",
        "tasks": list(tasks),
        "observation_spec": spec,
        "action_spec": {"shape": [4], "dtype": "float32"},
        "fingerprint": "synthetic",
    }
    write_dataset(path, attrs, records)
    return path


def write_config(folder: Path, name: str, method: str, steps: int = STEPS, diagnostics_every: int | None = None, **train) -> Path:
    """A config training `method` on the synthetic dataset for `steps` steps, logging every step
    (with `diagnostics_every`: gradient-conflict measurements at that interval)."""
    data = {
        "name": name,
        "out_dir": str(folder / "runs"),
        "env": {"tasks": list(TASKS)},
        "data": {"path": str(folder / "data.h5")},
        "agent": {"hidden_dim": 32, "num_layers": 2},
        "weighting": dict(zip(("name", "params"), METHODS.get(method, (method, {})))),
        "train": {"steps": steps, "batch_per_task": 8, "log_every": 1, "checkpoint_every": 1, "warmup_steps": 0, "num_threads": 1, **train},
    }
    if diagnostics_every is not None:
        data["diagnostics"] = {"every": diagnostics_every}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path
