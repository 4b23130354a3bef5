"""`EvalSettings`: everything one evaluation needs to know besides the checkpoint, in one object."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from rlmtl.config import EvalConfig


@dataclass(frozen=True)
class EvalSettings:
    """How to roll a checkpoint out; see `EvalConfig` for each field's meaning.

    Built from a run's `eval` config section with `EvalSettings.from_config(config.eval, **changes)`,
    where `changes` are the caller's own choices (the trainer's `train.eval_episodes`, `rlmtl eval
    --episodes/--workers/--envs-per-worker/--video`, no progress bar in a background evaluation).
    """

    episodes_per_task: int
    workers: int = 0
    envs_per_worker: int = 16
    seed: int = 0
    video: bool = False
    video_episodes: int = 3
    video_camera: str = ""
    video_size: int = 128
    video_format: str = "gif"
    episode_timeout_s: float = 300.0
    max_episode_retries: int = 2
    progress: bool = True
    resume: bool = False  # take the episodes already in the output folder's logs (`rlmtl eval --resume`)

    @classmethod
    def from_config(cls, section: EvalConfig, **changes: Any) -> "EvalSettings":
        """The settings of a run's `eval` section, with `changes` (None values are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {name: getattr(section, name) for name in names if hasattr(section, name)}
        unknown = [name for name in changes if name not in names]
        if unknown:
            raise TypeError(f"EvalSettings has no field(s) {unknown}")
        values.update({name: value for name, value in changes.items() if value is not None})
        return cls(**values)
