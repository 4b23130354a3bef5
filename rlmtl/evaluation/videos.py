"""Evaluation videos: each task's recorded episodes, back to back, in one file, with the episode,
the step and the outcome drawn on the frames.

Frames: one per env step (frame 0 is the reset scene). A band at the top shows `ep <episode>
step <step>` (the episode index of eval.json); a band at the bottom shows `success` from the step
the env reports success on, and `failed: <kind>` (eval.json's failure) once an unsolved episode has
ended. Each episode ends on its last frame held for `HOLD_S` seconds, so the outcome can be read.

Frame rate: the video plays in real time at the suite's `Suite.video_fps` (env steps per second
of simulated time; Meta-World 80, the `render_fps` of its envs). An mp4 holds every frame at that
rate. A GIF stores frame delays in whole centiseconds and browsers show a delay under 2 cs as
10 cs, so a GIF keeps every `stride`-th frame, each shown for `100 * stride / fps` cs: the
smallest stride that makes this a whole number of at least 2 (`gif_timing`; Meta-World: every 4th
frame, 50 ms each, 20 frames per second of real time, exact). A rate no stride up to one tenth of a
second makes exact gets the nearest centisecond instead (real time within half a centisecond per
frame). Each episode is padded with its last frame to a whole number of strides, so every episode
starts on a kept frame and its final frame is kept.

Both formats are encoded in memory and then written atomically: a failing write (a full disk)
cannot leave an encoder half-closed, and the encoder never sees the temporary file's name (ffmpeg
picks its container from the name's extension, which `.<task>.mp4.tmp-XXXX` lacks).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rlmtl.atomic import atomic_path
from rlmtl.errors import OutputError, RlmtlError

if TYPE_CHECKING:
    from rlmtl.evaluation.results import Slot
    from rlmtl.evaluation.rollout import EpisodeOutcome

HOLD_S = 0.5  # seconds each episode's last frame stays on screen
MIN_FONT_PX = 6  # smallest overlay text; longer text is cut at the frame's edge
MIN_GIF_DELAY_CS = 2  # browsers show shorter GIF delays as 10 cs
SUCCESS_RGB = (60, 220, 90)
FAILURE_RGB = (240, 80, 70)
TEXT_RGB = (255, 255, 255)


def check_video_writer(video: bool, video_format: str) -> None:
    """RlmtlError (exit 2) before any work when mp4 videos are asked for without imageio-ffmpeg."""
    if video and video_format == "mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise RlmtlError("eval.video_format=mp4 needs imageio-ffmpeg (pip install imageio-ffmpeg); or use gif") from None


def gif_timing(fps: float) -> tuple[int, int]:
    """(stride, delay in ms) of a GIF of env frames at `fps` played in real time: keep every
    stride-th frame for `delay` ms, a whole number of centiseconds >= `MIN_GIF_DELAY_CS`; exact
    for the smallest stride that allows it within a tenth of a second, else the nearest centisecond."""
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"video frame rate must be a positive number, got {fps}")
    rate = Fraction(fps).limit_denominator(1000)
    for stride in range(1, max(1, math.ceil(fps / 10)) + 1):
        centiseconds = Fraction(100 * stride) / rate
        if centiseconds.denominator == 1 and centiseconds >= MIN_GIF_DELAY_CS:
            return stride, 10 * int(centiseconds)
    stride = max(1, math.ceil(fps * MIN_GIF_DELAY_CS / 100))
    return stride, 10 * max(MIN_GIF_DELAY_CS, round(100 * stride / fps))


def _font(size: int) -> Any:
    """PIL's built-in font at `size` pixels (its fixed-size bitmap font where FreeType is missing)."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1, or no FreeType
        return ImageFont.load_default()


def annotate(frame: np.ndarray, top: str, bottom: str = "", bottom_rgb: tuple[int, int, int] = SUCCESS_RGB) -> np.ndarray:
    """A copy of `frame` [H, W, 3] uint8 with `top` written in a darkened band at its top and, when
    given, `bottom` (in `bottom_rgb`) in one at its bottom."""
    from PIL import Image, ImageDraw

    height, width = frame.shape[:2]
    size = max(8, round(height / 11))
    band = min(height, size + 4)
    out = np.array(frame, dtype=np.uint8, copy=True)
    out[:band] = out[:band] // 3  # darkened so light text reads on any scene
    if bottom:
        out[height - band :] = out[height - band :] // 3
    image = Image.fromarray(out)
    draw = ImageDraw.Draw(image)
    draw.text((2, 1), top, fill=TEXT_RGB, font=_fitting_font(draw, top, width - 4, size))
    if bottom:
        draw.text((2, height - band + 1), bottom, fill=bottom_rgb, font=_fitting_font(draw, bottom, width - 4, size))
    return np.asarray(image)


def _fitting_font(draw: Any, text: str, width: int, size: int) -> Any:
    """The font at `size` px, or smaller (down to MIN_FONT_PX) until `text` fits in `width` px."""
    font = _font(size)
    while size > MIN_FONT_PX and draw.textlength(text, font=font) > width:
        size -= 1
        font = _font(size)
    return font


def episode_clip(outcome: EpisodeOutcome, episode: int, fps: float, stride: int) -> list[np.ndarray]:
    """The annotated frames of one recorded episode (frame i after step i), its last frame held for
    `HOLD_S` s and padded to a whole number of `stride`s; [] when it has no frames."""
    frames = outcome.frames
    if not frames:
        return []
    last = len(frames) - 1
    ending = ("success", SUCCESS_RGB) if outcome.success else (f"failed: {outcome.failure or 'unknown'}", FAILURE_RGB)
    clip = [annotate(frame, f"ep {episode} step {step}") for step, frame in enumerate(frames)]
    held = annotate(frames[-1], f"ep {episode} step {last}", *ending)
    if outcome.success:  # an episode stops on the step the env reports success
        clip[-1] = held
    length = len(clip) + max(1, round(HOLD_S * fps))
    length += -length % stride
    return clip + [held] * (length - len(clip))


def encode_video(frames: list[np.ndarray], video_format: str, fps: float) -> bytes:
    """frames [(H, W, 3) uint8], `fps` of them per second -> the bytes of a GIF (every stride-th
    frame, `gif_timing`) or an mp4 (H.264, every frame)."""
    import imageio.v3 as iio

    if video_format == "gif":
        stride, delay_ms = gif_timing(fps)
        return iio.imwrite("<bytes>", np.stack(frames[::stride]), extension=".gif", duration=delay_ms, loop=0)
    return iio.imwrite("<bytes>", np.stack(frames), extension=".mp4", plugin="FFMPEG", fps=fps)


def task_clip(episodes: list[tuple[int, EpisodeOutcome]], fps: float) -> list[np.ndarray]:
    """The annotated clips of one task's recorded (episode index, outcome), in order, back to back."""
    stride, _ = gif_timing(fps)
    return [frame for episode, outcome in episodes for frame in episode_clip(outcome, episode, fps, stride)]


def write_videos(
    folder: Path, tasks: list[str], outcomes: Mapping[Slot, EpisodeOutcome], video_format: str, fps: Mapping[str, float]
) -> dict[str, str]:
    """Write `folder/<task>.<video_format>` ("gif" or "mp4") for every task of `tasks` with frames
    in `outcomes` (keyed by (task index, episode)), its episodes in order at `fps[task]` env steps
    per second, atomically; returns {task: path} (the `videos` of eval.json)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{folder}: cannot create the videos folder ({error.strerror or error})") from None
    written: dict[str, str] = {}
    for index, task in enumerate(tasks):
        recorded = [(episode, o) for (t, episode), o in sorted(outcomes.items(), key=lambda item: item[0]) if t == index and o.frames]
        if not recorded:
            continue
        target = folder / f"{task}.{video_format}"
        encoded = encode_video(task_clip(recorded, fps[task]), video_format, fps[task])
        try:
            with atomic_path(target) as tmp:
                tmp.write_bytes(encoded)
        except OSError as error:
            raise OutputError(f"{target}: cannot write the video ({error.strerror or error})") from None
        written[task] = str(target)
    return written


def tensorboard_gif(path: Path) -> tuple[bytes, int, int]:
    """(GIF bytes, height, width) of a video written by `write_videos`, for a TensorBoard image
    summary (what `SummaryWriter.add_video` writes, without its moviepy dependency): a GIF as it
    is; an mp4 decoded and encoded as a GIF at its own frame rate."""
    import imageio.v3 as iio

    if path.suffix == ".gif":
        data = path.read_bytes()
        height, width = iio.improps(data, extension=".gif", index=0).shape[:2]
        return data, height, width
    frames = iio.imread(path, plugin="FFMPEG", index=None)
    fps = float(iio.immeta(path, plugin="FFMPEG")["fps"])
    return encode_video(list(frames), "gif", fps), frames.shape[1], frames.shape[2]
