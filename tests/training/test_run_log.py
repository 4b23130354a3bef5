"""`rlmtl run`'s final evaluation in TensorBoard, read back with TensorBoard's own reader: the
success rates as scalars at the run's last step, the hyper-parameters with the final mean success
as their metric, and every task's video as an animated GIF image (what add_video writes)."""

from __future__ import annotations

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from rlmtl.config import load_config
from rlmtl.evaluation.results import summarise
from rlmtl.evaluation.rollout import EpisodeOutcome
from rlmtl.evaluation.videos import write_videos
from rlmtl.training.run_log import FINAL_SUCCESS_TAG, log_final_evaluation

TASKS = ["reach-v3", "push-v3"]


def evaluated(folder, video_format: str = "gif") -> dict:
    """An eval result of 2 tasks x 3 episodes (reach 2/3, push 0/3), the first 2 of each with video."""
    frames = [np.full((32, 32, 3), 30 * i, np.uint8) for i in range(6)]
    outcomes = {(t, e): EpisodeOutcome(t == 0 and e < 2, 5, e, frames=frames if e < 2 else []) for t in range(2) for e in range(3)}
    result = dict(summarise(TASKS, 3, outcomes))
    result["videos"] = write_videos(folder / "videos", TASKS, outcomes, video_format, {t: 80.0 for t in TASKS})
    return result


def read_events(folder) -> EventAccumulator:
    events = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    return events


@pytest.mark.parametrize("video_format", ["gif", "mp4"])
def test_the_final_evaluation_is_in_tensorboard(tmp_path, video_format):
    if video_format == "mp4":
        pytest.importorskip("imageio_ffmpeg", reason="mp4 needs imageio-ffmpeg")
    config = load_config(None, ["weighting.name=famo", "train.seed=3", "train.lr=0.002"])
    log_final_evaluation(tmp_path, config, evaluated(tmp_path, video_format), step=40)
    events = read_events(tmp_path / "tb")
    scalars = {tag: [(e.step, round(e.value, 4)) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    assert scalars == {
        "final_eval/success/reach-v3": [(40, 0.6667)],
        "final_eval/success/push-v3": [(40, 0.0)],
        FINAL_SUCCESS_TAG: [(40, 0.3333)],
    }
    for task in TASKS:
        (image,) = events.Images(f"final_eval/video/{task}")
        assert image.step == 40 and (image.height, image.width) == (32, 32)
        assert image.encoded_image_string.startswith(b"GIF89a")  # TensorBoard animates a GIF image
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["weighting.name"].string_value == "famo"
    assert start.hparams["train.seed"].number_value == 3 and start.hparams["train.lr"].number_value == 0.002
    assert start.hparams["agent.obs_keys"].string_value == "state"
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert [info.name.tag for info in experiment.metric_infos] == [FINAL_SUCCESS_TAG]


def test_it_sits_beside_the_training_curves_and_survives_a_resume(tmp_path):
    """The final evaluation goes to a file of its own in tb/; a later resume at that step drops it
    (TensorBoard's purge), as it drops every event the resumed run writes again."""
    from rlmtl.training.tb_events import EventFile

    training = EventFile(tmp_path / "tb")
    training.scalar("loss/mean", 1.0, 40)
    training.close()
    config = load_config(None)
    log_final_evaluation(tmp_path, config, evaluated(tmp_path), step=40)
    events = read_events(tmp_path / "tb")
    assert "loss/mean" in events.Tags()["scalars"] and FINAL_SUCCESS_TAG in events.Tags()["scalars"]
    resumed = EventFile(tmp_path / "tb", resumed_at=40)
    resumed.close()
    log_final_evaluation(tmp_path, config, evaluated(tmp_path), step=60)
    assert [(e.step, round(e.value, 4)) for e in read_events(tmp_path / "tb").Scalars(FINAL_SUCCESS_TAG)] == [(60, 0.3333)]
