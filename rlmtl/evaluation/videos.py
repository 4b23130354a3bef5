"""Evaluation videos: each task's recorded episodes, back to back, in one file."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlmtl.atomic import atomic_path

if TYPE_CHECKING:
    from rlmtl.evaluation.results import Slot
    from rlmtl.evaluation.rollout import EpisodeOutcome


def write_videos(folder: Path, tasks: list[str], outcomes: Mapping[Slot, EpisodeOutcome], video_format: str) -> dict[str, str]:
    """Write `folder/<task>.<video_format>` ("gif" or "mp4") for every task of `tasks` with frames
    in `outcomes` (keyed by (task index, episode); episodes in order), atomically; returns
    {task: path} (the `videos` of eval.json)."""
    import imageio.v2 as imageio

    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    for index, task in enumerate(tasks):
        frames: list[Any] = [frame for (t, _), o in sorted(outcomes.items()) if t == index for frame in o.frames]  # (H, W, 3) uint8
        if not frames:
            continue
        target = folder / f"{task}.{video_format}"
        with atomic_path(target) as tmp:
            if video_format == "gif":
                imageio.mimsave(tmp, frames[::2], format="GIF", duration=1000 / 40, loop=0)
            else:
                imageio.mimsave(tmp, frames, format="FFMPEG", fps=40)
        written[task] = str(target)
    return written
