"""Small rlmtl datasets (Meta-World MT10 layout, no simulator) for the export/import tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rlmtl.data.dataset import Episode, TaskRecord, iter_episodes, read_attrs, write_dataset

TASKS = ["reach-v3", "push-v3"]
SIZE = 16


def camera_frames(length: int, seed: int) -> np.ndarray:
    """Smooth [T, SIZE, SIZE, 3] frames (a moving gradient), which a video codec keeps close."""
    rows, cols = np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing="ij")
    frames = [np.stack([rows * 8 + 4 * t + 10 * seed, cols * 8 + 30, np.full_like(rows, 60 + 10 * seed)], -1) for t in range(length)]
    return np.asarray(frames, np.uint8)


def make_episode(rng: np.random.Generator, length: int, attempt: int, cameras: bool) -> Episode:
    observations = {
        "state": rng.normal(size=(length, 39)).astype(np.float32),
        "proprio": rng.normal(size=(length, 4)).astype(np.float32),
    }
    if cameras:
        observations["rgb_corner"] = camera_frames(length, attempt)
    success = np.arange(length) == length - 1
    return Episode(
        observations=observations,
        actions=rng.uniform(-1, 1, (length, 4)).astype(np.float32),
        rewards=rng.uniform(0, 10, length).astype(np.float32),
        success=success,
        scene_seed=1000 + attempt,
        attempt=attempt,
    )


def make_dataset(path: Path, tasks: list[str] = TASKS, cameras: bool = False, demos: int = 3) -> Path:
    """An rlmtl dataset of `tasks` (MT10 names), `demos` demos each of 4-7 steps."""
    rng = np.random.default_rng(0)
    records = [
        TaskRecord(task, index, [make_episode(rng, 4 + (demo + index) % 4, demo, cameras) for demo in range(demos)], demos, demos + 1)
        for index, task in enumerate(tasks)
    ]
    spec = {
        "state": {"shape": [39], "dtype": "float32", "low": None, "high": None},
        "proprio": {"shape": [4], "dtype": "float32", "low": None, "high": None},
    }
    if cameras:
        spec["rgb_corner"] = {"shape": [SIZE, SIZE, 3], "dtype": "uint8", "low": None, "high": None}
    attrs = {
        **({"image_size": SIZE} if cameras else {}),
        "backend": "metaworld",
        "suite": "mt10",
        "tasks": list(tasks),
        "observation_spec": spec,
        "action_spec": {"shape": [4], "dtype": "float32", "low": -1.0, "high": 1.0},
        "seeds": {"split": "train", "base_seed": 0},
        "max_episode_steps": 500,
        "fingerprint": "fixture0001",
    }
    write_dataset(path, attrs, records)
    return path


def dataset_content(path: Path) -> dict[str, list[dict[str, np.ndarray]]]:
    """Every task's demos as dicts of arrays (observations, actions, rewards, success, seeds)."""
    content = {}
    for task in read_attrs(path)["tasks"]:
        content[task] = [
            {
                **{f"obs/{key}": values for key, values in episode.observations.items()},
                "actions": episode.actions,
                "rewards": episode.rewards,
                "success": episode.success,
                "scene_seed": np.array(episode.scene_seed),
                "attempt": np.array(episode.attempt),
            }
            for episode in iter_episodes(path, task)
        ]
    return content


def files_under(folder: Path) -> list[str]:
    """Every file and folder under `folder` (relative), except rlmtl's lock files."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.name.endswith(".lock"))
