"""Shared fixtures: tiny configs that run the real simulator in seconds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("MUJOCO_GL", "egl")

TINY_TASKS = ["reach-v3", "drawer-close-v3"]


def tiny_config_dict(tmp_path: Path, **sections) -> dict:
    """A 2-task config: 3 demos per task, a few training steps, 2 evaluation episodes."""
    data = {
        "name": "tiny",
        "out_dir": str(tmp_path / "runs"),
        "env": {"tasks": list(TINY_TASKS)},
        "data": {"demos_per_task": 3, "cache_dir": str(tmp_path / "data"), "workers": 1},
        "agent": {"hidden_dim": 64, "num_layers": 2},
        "train": {"steps": 40, "batch_per_task": 8, "log_every": 10, "checkpoint_every": 20, "warmup_steps": 5},
        "eval": {"episodes_per_task": 2, "workers": 1},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            data.setdefault(section, {}).update(values)
        else:
            data[section] = values
    return data


@pytest.fixture
def tiny_config_file(tmp_path: Path):
    """Factory: write a tiny config (with section updates) and return its path."""

    def make(**sections) -> Path:
        path = tmp_path / "tiny.yaml"
        path.write_text(yaml.safe_dump(tiny_config_dict(tmp_path, **sections)))
        return path

    return make
