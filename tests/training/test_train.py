import json

import pytest
import torch

from rlmtl.config import config_to_yaml, load_config
from rlmtl.data.collect import collect
from rlmtl.errors import CheckpointError, RlmtlError
from rlmtl.training.trainer import Trainer, train


@pytest.fixture
def tiny(tiny_config_file):
    path = tiny_config_file()
    collect(load_config(path), progress=False)
    return path


def final_parameters(run_dir):
    payload = torch.load(sorted((run_dir / "checkpoints").glob("step_*.pt"))[-1], weights_only=True)
    return payload["model"], payload["optimizer"]


def test_resume_is_exact(tiny):
    straight = train(load_config(tiny, ["name=straight"]), progress=False)
    train(load_config(tiny, ["name=split"]), progress=False, stop_after=20)
    resumed = train(load_config(tiny, ["name=split"]), resume=True, progress=False)
    assert straight.step == resumed.step == 40
    model_a, optim_a = final_parameters(straight.run_dir)
    model_b, optim_b = final_parameters(resumed.run_dir)
    for key in model_a:
        torch.testing.assert_close(model_a[key], model_b[key], rtol=0, atol=0)
    assert optim_a["state"][0]["step"] == optim_b["state"][0]["step"]
    steps = [json.loads(line)["step"] for line in (resumed.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 40


def test_trainer_logs_every_task_and_writes_run_folder(tiny):
    result = train(load_config(tiny), progress=False)
    run = result.run_dir
    assert (run / "config.yaml").is_file() and list((run / "tb").iterdir())
    header, saved = (run / "config.yaml").read_text().split("\n", 1)
    assert header.startswith("# written by") and saved == config_to_yaml(load_config(tiny))  # what `rlmtl config CONFIG` prints
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert set(record["loss"]) == {"reach-v3", "drawer-close-v3"} and record["weight"]["reach-v3"] == 1.0
    assert (run / "checkpoints" / "last").read_text().strip() == "step_00000040.pt"


def test_refuses_to_overwrite_or_resume_wrongly(tiny):
    train(load_config(tiny), progress=False)
    with pytest.raises(RlmtlError, match="--resume"):
        Trainer(load_config(tiny), progress=False)
    with pytest.raises(CheckpointError, match="agent"):
        Trainer(load_config(tiny, ["agent.hidden_dim=32"]), resume=True, progress=False)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        Trainer(load_config(tiny, ["name=fresh"]), resume=True, progress=False)


def test_eval_during_training_keeps_best(tiny):
    result = train(load_config(tiny, ["train.eval_every=20", "train.eval_episodes=1"]), progress=False)
    assert result.best_checkpoint is not None and result.best_checkpoint.is_file()
    evals = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines() if "eval_success" in line]
    assert [e["step"] for e in evals] == [20, 40]
    assert result.best_success == max(e["eval_success"] for e in evals)


def test_affinity_probe_state_resumes_exactly(tiny):
    overrides = ["affinity.probe_every=7"]
    straight = train(load_config(tiny, ["name=probe-straight", *overrides]), progress=False)
    train(load_config(tiny, ["name=probe-split", *overrides]), progress=False, stop_after=20)
    resumed = train(load_config(tiny, ["name=probe-split", *overrides]), resume=True, progress=False)
    a, b = final_parameters(straight.run_dir), final_parameters(resumed.run_dir)
    for key in a[0]:
        torch.testing.assert_close(a[0][key], b[0][key], rtol=0, atol=0)
    probe_a = torch.load(sorted((straight.run_dir / "checkpoints").glob("step_*.pt"))[-1], weights_only=True)["affinity_probe"]
    probe_b = torch.load(sorted((resumed.run_dir / "checkpoints").glob("step_*.pt"))[-1], weights_only=True)["affinity_probe"]
    assert probe_a["count"].item() == 6  # steps 0, 7, 14, 21, 28, 35
    torch.testing.assert_close(probe_a["total"], probe_b["total"], rtol=0, atol=0)


def test_resume_refuses_a_dataset_whose_content_changed_under_the_same_settings(tmp_path):
    from synthetic_runs import write_config, write_tiny_dataset

    write_tiny_dataset(tmp_path / "data.h5")
    config = load_config(write_config(tmp_path, "changed", "uniform", steps=4))
    train(config, progress=False, stop_after=2)
    write_tiny_dataset(tmp_path / "data.h5", seed=1)  # same path, same fingerprint, other demos
    with pytest.raises(CheckpointError, match=r"content changed since the run started"):
        Trainer(config, resume=True, progress=False)
