"""`rlmtl run` on a synthetic dataset (collection stubbed: it would reuse a cached dataset) with
the real simulator for its final evaluation: the run folder holds the report's figures (PNG and
PDF) and the videos, and its TensorBoard events hold the final evaluation, the hyper-parameters
and the videos."""

from __future__ import annotations

import json

import yaml
from conftest import tiny_config_dict
from PIL import Image
from synthetic_runs import write_tiny_dataset
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import rlmtl.data.collect as collect_module
from rlmtl.cli import main
from rlmtl.training.run_log import FINAL_SUCCESS_TAG


def test_run_logs_its_final_evaluation_and_writes_paper_figures(tmp_path, monkeypatch):
    dataset = write_tiny_dataset(tmp_path / "d.h5")
    monkeypatch.setattr(collect_module, "collect", lambda config, progress=True: dataset)
    sections = {
        "data": {"path": str(tmp_path / "d.h5")},
        "env": {"max_episode_steps": 6},
        "train": {"steps": 4, "checkpoint_every": 2, "log_every": 2},
        "eval": {"episodes_per_task": 2, "video": True, "video_episodes": 1, "video_size": 32},
    }
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(tmp_path, **sections)))
    assert main(["run", str(config), "--no-progress"]) == 0
    run = tmp_path / "runs" / "tiny"
    result = json.loads((run / "eval.json").read_text())
    tasks = list(result["per_task"])
    events = EventAccumulator(str(run / "tb"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    for task in tasks:
        (scalar,) = events.Scalars(f"final_eval/success/{task}")
        assert (scalar.step, scalar.value) == (4, result["per_task"][task]["success_rate"])
        (image,) = events.Images(f"final_eval/video/{task}")
        assert image.step == 4 and image.encoded_image_string == (run / "videos" / f"{task}.gif").read_bytes()
    assert [e.value for e in events.Scalars(FINAL_SUCCESS_TAG)] == [result["overall"]["success_rate"]]
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(events.PluginTagToContent("hparams"))
    assert "loss/mean" in events.Tags()["scalars"]  # beside the training curves
    for name in ("success_per_task", "training"):
        with Image.open(run / "plots" / f"{name}.png") as image:
            assert round(image.info["dpi"][0]) >= 200
        assert (run / "plots" / f"{name}.pdf").read_bytes().startswith(b"%PDF")
