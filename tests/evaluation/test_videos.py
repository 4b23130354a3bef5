"""Evaluation videos: GIF and mp4 are encoded in memory and written atomically and play in real
time at the env's rate (a GIF in whole centiseconds); every recorded episode is in its task's video,
with its episode, step and outcome drawn on the frames; `rlmtl eval --video/--no-video
--video-format` override the run's config; mp4 without imageio-ffmpeg is refused before any work."""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import fault_plugin
import imageio.v3 as iio
import numpy as np
import pytest
import yaml
from conftest import tiny_config_dict
from PIL import Image
from synthetic_runs import write_tiny_dataset

from rlmtl.cli import main
from rlmtl.envs import make_suite
from rlmtl.envs.base import DEFAULT_VIDEO_FPS
from rlmtl.errors import RlmtlError
from rlmtl.evaluation.evaluate import evaluate_checkpoint
from rlmtl.evaluation.rollout import EpisodeOutcome
from rlmtl.evaluation.settings import EvalSettings
from rlmtl.evaluation.videos import (
    FAILURE_RGB,
    HOLD_S,
    SUCCESS_RGB,
    annotate,
    check_video_writer,
    episode_clip,
    gif_timing,
    task_clip,
    write_videos,
)

HELPERS = Path(__file__).resolve().parents[1] / "helpers"


FPS = 80.0  # Meta-World's render_fps


def gray_frames(count: int, level: int = 0, size: int = 32) -> list[np.ndarray]:
    return [np.full((size, size, 3), level + 20 * i, np.uint8) for i in range(count)]


def outcomes(frames_per_episode: int = 9):
    return {(0, 0): EpisodeOutcome(True, frames_per_episode - 1, 1, frames=gray_frames(frames_per_episode))}


def gif_durations(data: bytes) -> list[int]:
    """The delay of every frame Pillow reads from a GIF, in ms."""
    durations = []
    with Image.open(io.BytesIO(data)) as image:
        for index in range(image.n_frames):
            image.seek(index)
            durations.append(image.info["duration"])
    return durations


@pytest.mark.parametrize(
    ("fps", "stride", "delay_ms"),
    [(80, 4, 50), (40, 2, 50), (20, 1, 50), (50, 1, 20), (100, 2, 20), (30, 3, 100), (2, 1, 500), (1000, 20, 20)],
)
def test_gif_timing_is_exact_in_whole_centiseconds_of_at_least_two(fps, stride, delay_ms):
    assert gif_timing(fps) == (stride, delay_ms)
    assert delay_ms % 10 == 0 and delay_ms >= 20  # browsers play shorter delays as 100 ms
    assert stride * 1000 / fps == delay_ms  # real time, exactly


def test_meta_world_videos_play_at_its_render_fps():
    suite = make_suite("metaworld", "mt10")
    assert suite.video_fps("reach-v3", None) == FPS
    assert FPS == 1 / 0.0125  # 5 MuJoCo steps of 2.5 ms per env step


def test_a_gif_plays_its_episodes_in_real_time(tmp_path):
    written = write_videos(tmp_path / "videos", ["reach-v3"], outcomes(), "gif", {"reach-v3": FPS})
    data = (tmp_path / "videos" / "reach-v3.gif").read_bytes()
    assert written == {"reach-v3": str(tmp_path / "videos" / "reach-v3.gif")}
    stride, delay_ms = gif_timing(FPS)
    clip = task_clip([(0, outcomes()[(0, 0)])], FPS)
    assert len(clip) % stride == 0 and len(clip) >= 9 + HOLD_S * FPS
    durations = gif_durations(data)
    assert all(d % delay_ms == 0 for d in durations)  # Pillow merges repeated frames, adding their delays
    assert sum(durations) == 1000 * len(clip) / FPS  # 12.5 ms of GIF per env step


def test_an_mp4_holds_every_frame_at_the_env_rate(tmp_path):
    pytest.importorskip("imageio_ffmpeg", reason="mp4 needs imageio-ffmpeg (the dev and video extras install it)")
    write_videos(tmp_path / "videos", ["reach-v3"], outcomes(), "mp4", {"reach-v3": FPS})
    data = (tmp_path / "videos" / "reach-v3.mp4").read_bytes()
    assert data[4:8] == b"ftyp"
    clip = task_clip([(0, outcomes()[(0, 0)])], FPS)
    assert iio.imread(data, extension=".mp4", plugin="FFMPEG", index=None).shape == (len(clip), 32, 32, 3)
    assert iio.immeta(data, extension=".mp4", plugin="FFMPEG")["fps"] == FPS
    assert not [p for p in (tmp_path / "videos").iterdir() if ".tmp-" in p.name]


def band_rows(size: int = 32) -> int:
    return max(8, round(size / 11)) + 4


def is_colour(pixels: np.ndarray, rgb: tuple[int, int, int]) -> bool:
    """Some pixel leans the way `rgb` does (green over red, or red over green): the gray scene has no tint."""
    values = pixels.reshape(-1, 3).astype(int)
    lean = np.sign(rgb[1] - rgb[0])
    return bool((lean * (values[:, 1] - values[:, 0]) > 40).any())


def test_the_overlay_writes_episode_and_step_in_a_band_and_leaves_the_scene():
    frame = np.full((32, 32, 3), 200, np.uint8)
    drawn = annotate(frame, "ep 0 step 7")
    rows = band_rows()
    assert not np.array_equal(drawn[:rows], frame[:rows])
    assert drawn[:rows].max() > 150 > 200 // 3  # light text on the darkened band
    np.testing.assert_array_equal(drawn[rows:], frame[rows:])  # the scene below the band is untouched
    assert not np.array_equal(annotate(frame, "ep 0 step 8")[:rows], drawn[:rows])  # the step is written


def test_success_shows_from_the_step_the_env_reports_it():
    solved = EpisodeOutcome(True, 5, 1, frames=gray_frames(6, level=60))
    clip = episode_clip(solved, 2, FPS, 4)
    rows = band_rows()
    bottom = [frame[-rows:] for frame in clip]
    assert not any(is_colour(b, SUCCESS_RGB) for b in bottom[:5])  # steps 0-4: not solved yet
    assert all(is_colour(b, SUCCESS_RGB) for b in bottom[5:])  # step 5 and its hold
    assert len(clip) == 6 + round(HOLD_S * FPS) + (-(6 + round(HOLD_S * FPS)) % 4)


def test_a_failed_episode_ends_on_its_failure():
    failed = EpisodeOutcome(False, 5, 1, frames=gray_frames(6, level=60), failure="step_limit")
    clip = episode_clip(failed, 0, FPS, 4)
    rows = band_rows()
    assert not any(is_colour(frame[-rows:], FAILURE_RGB) or is_colour(frame[-rows:], SUCCESS_RGB) for frame in clip[:6])
    assert all(is_colour(frame[-rows:], FAILURE_RGB) for frame in clip[6:])


def test_every_recorded_episode_of_a_task_is_in_its_video(tmp_path):
    fps = 20.0  # stride 1: every frame kept, so each episode's frames can be found
    levels = {0: 30, 1: 110, 2: 190}
    recorded = {(0, e): EpisodeOutcome(e == 1, 3, 1, frames=gray_frames(4, level=levels[e], size=48)) for e in range(3)}
    recorded[(0, 3)] = EpisodeOutcome(False, 3, 1)  # not recorded (no frames)
    write_videos(tmp_path, ["reach-v3"], recorded, "gif", {"reach-v3": fps})
    frames = iio.imread(tmp_path / "reach-v3.gif", index=None)[..., :3]
    middles = {int(np.median(frame[24:30, 20:28, 0])) for frame in frames}  # a patch below the top band
    for level in levels.values():
        assert any(abs(m - level) <= 8 for m in middles), (level, sorted(middles))
    clip = task_clip([(e, recorded[(0, e)]) for e in range(3)], fps)
    assert sum(gif_durations((tmp_path / "reach-v3.gif").read_bytes())) == 1000 * len(clip) / fps


def test_mp4_without_imageio_ffmpeg_is_refused_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import raises ImportError
    with pytest.raises(RlmtlError, match="needs imageio-ffmpeg"):
        check_video_writer(True, "mp4")
    check_video_writer(False, "mp4")
    check_video_writer(True, "gif")
    write_tiny_dataset(tmp_path / "d.h5")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(tmp_path, data={"path": str(tmp_path / "d.h5")})))
    assert main(["run", str(config), "eval.video=true", "eval.video_format=mp4", "--no-progress"]) == 2
    assert "needs imageio-ffmpeg" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # refused before training


@pytest.mark.slow
def test_eval_flags_override_the_runs_video_settings(tmp_path, capsys):
    pytest.importorskip("imageio_ffmpeg", reason="mp4 needs imageio-ffmpeg")
    write_tiny_dataset(tmp_path / "d.h5")
    config = tmp_path / "c.yaml"
    sections = {"data": {"path": str(tmp_path / "d.h5")}, "train": {"steps": 4, "checkpoint_every": 2}, "eval": {"video": True}}
    config.write_text(yaml.safe_dump(tiny_config_dict(tmp_path, **sections)))
    assert main(["train", str(config), "--no-progress"]) == 0
    run = tmp_path / "runs" / "tiny"
    for name, flags, expected in [("off", ["--no-video"], set()), ("mp4", ["--video-format", "mp4"], {"mp4"})]:
        out = tmp_path / name
        out.mkdir()
        assert main(["eval", str(run), "--episodes", "1", "--workers", "1", "--out", str(out), "--no-progress", *flags]) == 0
        videos = out / "videos"
        found = {p.suffix.lstrip(".") for p in videos.iterdir()} if videos.exists() else set()
        assert found == expected, (name, found)


def test_the_first_video_episodes_of_every_task_are_in_its_video(tmp_path, monkeypatch):
    """A real evaluation (the toy backend of fault_plugin, in worker processes) with
    eval.video_episodes = 2 of 4: each task's GIF holds exactly its episodes 0 and 1, in real time."""
    monkeypatch.setenv("RLMTL_PLUGINS", "fault_plugin")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HELPERS), os.environ.get("PYTHONPATH", "")]))
    run = fault_plugin.make_toy_run(tmp_path / "run")
    settings = EvalSettings(episodes_per_task=4, workers=1, video=True, video_episodes=2, progress=False)
    result = evaluate_checkpoint(run, settings, out=tmp_path / "out")
    assert result is not None and set(result["videos"]) == set(fault_plugin.TASKS)
    fps = DEFAULT_VIDEO_FPS  # the toy suite does not override Suite.video_fps
    for task in fault_plugin.TASKS:
        rows = [row for row in result["episodes"] if row["task"] == task and row["episode"] < 2]
        recorded = [(row["episode"], EpisodeOutcome(row["success"], row["steps"], 0, frames=gray_frames(row["steps"] + 1))) for row in rows]
        expected_ms = 1000 * len(task_clip(recorded, fps)) / fps
        assert sum(gif_durations(Path(result["videos"][task]).read_bytes())) == expected_ms, task
