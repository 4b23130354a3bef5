"""Evaluation videos: each task's recorded episodes, back to back, in one file."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlmtl.atomic import atomic_path
from rlmtl.errors import OutputError

if TYPE_CHECKING:
    from rlmtl.evaluation.results import Slot
    from rlmtl.evaluation.rollout import EpisodeOutcome


def write_videos(folder: Path, tasks: list[str], outcomes: Mapping[Slot, EpisodeOutcome], video_format: str) -> dict[str, str]:
    """Write `folder/<task>.<video_format>` ("gif" or "mp4") for every task of `tasks` with frames
    in `outcomes` (keyed by (task index, episode); episodes in order), atomically; returns
    {task: path} (the `videos` of eval.json)."""
    import imageio.v2 as imageio

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{folder}: cannot create the videos folder ({error.strerror or error})") from None
    written: dict[str, str] = {}
    for index, task in enumerate(tasks):
        frames: list[Any] = [frame for (t, _), o in sorted(outcomes.items()) if t == index for frame in o.frames]  # (H, W, 3) uint8
        if not frames:
            continue
        target = folder / f"{task}.{video_format}"
        # a GIF is encoded in memory first, so a failing write (a full disk) cannot leave imageio's writer half-closed
        encoded = imageio.mimsave("<bytes>", frames[::2], format="GIF", duration=1000 / 40, loop=0) if video_format == "gif" else None
        try:
            with atomic_path(target) as tmp:
                if encoded is not None:
                    tmp.write_bytes(encoded)
                else:
                    imageio.mimsave(tmp, frames, format="FFMPEG", fps=40)
        except OSError as error:
            raise OutputError(f"{target}: cannot write the video ({error.strerror or error})") from None
        written[task] = str(target)
    return written
