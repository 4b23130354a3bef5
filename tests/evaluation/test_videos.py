"""Evaluation videos: GIF and mp4 are encoded in memory and written atomically, at the stated frame
rate; `rlmtl eval --video/--no-video --video-format` override the run's config; mp4 without
imageio-ffmpeg is refused before any work."""

from __future__ import annotations

import io
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import yaml
from conftest import tiny_config_dict
from PIL import Image
from synthetic_runs import write_tiny_dataset

from rlmtl.cli import main
from rlmtl.errors import RlmtlError
from rlmtl.evaluation.rollout import EpisodeOutcome
from rlmtl.evaluation.videos import GIF_STRIDE, VIDEO_FPS, check_video_writer, write_videos


def outcomes(frames_per_episode: int = 9):
    frames = [np.full((32, 32, 3), 20 * i, np.uint8) for i in range(frames_per_episode)]
    return {(0, 0): EpisodeOutcome(True, frames_per_episode, 1, frames=frames)}


def test_a_gif_shows_every_second_frame_for_50_ms(tmp_path):
    written = write_videos(tmp_path / "videos", ["reach-v3"], outcomes(), "gif")
    data = (tmp_path / "videos" / "reach-v3.gif").read_bytes()
    assert written == {"reach-v3": str(tmp_path / "videos" / "reach-v3.gif")}
    assert iio.imread(data, index=None).shape[0] == 5  # frames 0, 2, 4, 6, 8
    with Image.open(io.BytesIO(data)) as image:
        assert image.info["duration"] == 1000 * GIF_STRIDE / VIDEO_FPS == 50  # a whole number of centiseconds


def test_an_mp4_holds_every_frame(tmp_path):
    pytest.importorskip("imageio_ffmpeg", reason="mp4 needs imageio-ffmpeg (the dev and video extras install it)")
    write_videos(tmp_path / "videos", ["reach-v3"], outcomes(), "mp4")
    data = (tmp_path / "videos" / "reach-v3.mp4").read_bytes()
    assert data[4:8] == b"ftyp"
    assert iio.imread(data, extension=".mp4", plugin="FFMPEG", index=None).shape == (9, 32, 32, 3)
    assert not [p for p in (tmp_path / "videos").iterdir() if ".tmp-" in p.name]


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
