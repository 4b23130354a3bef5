"""Evaluation videos: each task's recorded episodes, back to back, in one file.

Both formats are encoded in memory and then written atomically: a failing write (a full disk)
cannot leave an encoder half-closed, and the encoder never sees the temporary file's name (ffmpeg
picks its container from the name's extension, which `.<task>.mp4.tmp-XXXX` lacks). Videos play
at `VIDEO_FPS` env frames per second: mp4 holds every frame; a GIF every second frame, each shown
for 50 ms (GIF frame delays are whole centiseconds, so 25 ms would play 1.25x fast).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlmtl.atomic import atomic_path
from rlmtl.errors import OutputError, RlmtlError

VIDEO_FPS = 40
GIF_STRIDE = 2  # a GIF keeps every second frame (half the size)


def check_video_writer(video: bool, video_format: str) -> None:
    """RlmtlError (exit 2) before any work when mp4 videos are asked for without imageio-ffmpeg."""
    if video and video_format == "mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise RlmtlError("eval.video_format=mp4 needs imageio-ffmpeg (pip install imageio-ffmpeg); or use gif") from None


def encode_video(frames: list[Any], video_format: str) -> bytes:
    """frames [(H, W, 3) uint8] -> the bytes of a GIF or an mp4 (H.264) at VIDEO_FPS."""
    import imageio.v3 as iio
    import numpy as np

    if video_format == "gif":
        return iio.imwrite("<bytes>", np.stack(frames[::GIF_STRIDE]), extension=".gif", duration=1000 * GIF_STRIDE / VIDEO_FPS, loop=0)
    return iio.imwrite("<bytes>", np.stack(frames), extension=".mp4", plugin="FFMPEG", fps=VIDEO_FPS)


if TYPE_CHECKING:
    from rlmtl.evaluation.results import Slot
    from rlmtl.evaluation.rollout import EpisodeOutcome


def write_videos(folder: Path, tasks: list[str], outcomes: Mapping[Slot, EpisodeOutcome], video_format: str) -> dict[str, str]:
    """Write `folder/<task>.<video_format>` ("gif" or "mp4") for every task of `tasks` with frames
    in `outcomes` (keyed by (task index, episode); episodes in order), atomically; returns
    {task: path} (the `videos` of eval.json)."""
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
        encoded = encode_video(frames, video_format)
        try:
            with atomic_path(target) as tmp:
                tmp.write_bytes(encoded)
        except OSError as error:
            raise OutputError(f"{target}: cannot write the video ({error.strerror or error})") from None
        written[task] = str(target)
    return written
