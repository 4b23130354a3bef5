"""Datasets larger than `data.memory_budget_gb`: camera frames read from the file per batch serve
exactly the batches the in-memory sampler serves, and a streamed run resumes exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from synthetic_runs import TASKS, write_tiny_dataset

from rlmtl.config import load_config
from rlmtl.data.dataset import load_dataset, observation_bytes
from rlmtl.data.sampler import FlatData, TaskBalancedSampler
from rlmtl.data.streaming import StreamingSampler, keys_to_stream
from rlmtl.training.checkpoint import load_checkpoint, resolve_checkpoint
from rlmtl.training.trainer import train

KEYS = ["state", "rgb_corner"]
CPU = torch.device("cpu")


@pytest.fixture
def image_dataset(tmp_path):
    return write_tiny_dataset(tmp_path / "images.h5", image_size=40)


def samplers(path, seed=0, batch=6, prefetch=2):
    in_memory = load_dataset(path, TASKS, KEYS)
    streamed = load_dataset(path, TASKS, KEYS, stream_keys=["rgb_corner"])
    assert "rgb_corner" not in streamed.per_task[0].observations
    plain = TaskBalancedSampler(FlatData.build(in_memory, KEYS, CPU), batch, seed, CPU)
    stream = StreamingSampler(streamed, FlatData.build(streamed, ["state"], CPU), ["rgb_corner"], batch, seed, CPU, prefetch=prefetch)
    return plain, stream


def assert_same_batch(a, b):
    assert a["obs"].keys() == b["obs"].keys()
    for key in a["obs"]:
        torch.testing.assert_close(a["obs"][key], b["obs"][key], rtol=0, atol=0)
    torch.testing.assert_close(a["actions"], b["actions"], rtol=0, atol=0)


def test_only_camera_keys_are_streamed(image_dataset):
    spec = {"state": {"shape": [39], "dtype": "float32"}, "rgb_corner": {"shape": [40, 40, 3], "dtype": "uint8"}}
    assert keys_to_stream(spec, KEYS) == ["rgb_corner"]
    assert keys_to_stream({"rgb_small": {"shape": [8, 8, 3], "dtype": "uint8"}}, ["rgb_small"]) == []
    sizes = observation_bytes(image_dataset, TASKS, KEYS)
    assert sizes["rgb_corner"] == len(TASKS) * (12 + 13) * 40 * 40 * 3 and sizes["state"] == len(TASKS) * 25 * 39 * 4


@pytest.mark.parametrize("prefetch", [1, 3])
def test_streamed_batches_equal_in_memory_batches(image_dataset, prefetch):
    plain, stream = samplers(image_dataset, prefetch=prefetch)
    try:
        for _ in range(5):
            assert_same_batch(plain.sample(), stream.sample())
    finally:
        stream.close()


def test_a_checkpointed_state_resumes_either_sampler_at_the_next_batch(image_dataset):
    plain, stream = samplers(image_dataset, seed=4)
    try:
        for _ in range(3):
            assert_same_batch(plain.sample(), stream.sample())
        state = stream.state_dict()  # taken with batches read ahead
        assert state["generator"].equal(plain.state_dict()["generator"])
        expected = [plain.sample() for _ in range(2)]
        resumed_plain, resumed_stream = samplers(image_dataset, seed=99)
        resumed_plain.load_state_dict(state)
        resumed_stream.load_state_dict(state)
        for batch in expected:
            assert_same_batch(resumed_plain.sample(), batch)
            assert_same_batch(resumed_stream.sample(), batch)
        resumed_stream.close()
    finally:
        stream.close()


def _config(tmp_path, dataset, name, budget, steps=6, method="auto_lambda"):
    config = {
        "name": name,
        "out_dir": str(tmp_path / "runs"),
        "env": {"tasks": TASKS, "cameras": ["corner"], "image_size": 40},
        "data": {"path": str(dataset), "memory_budget_gb": budget},
        "agent": {"obs_keys": KEYS, "hidden_dim": 32, "num_layers": 1, "image_channels": [8, 8]},
        "train": {"steps": steps, "batch_per_task": 4, "log_every": 2, "checkpoint_every": 2, "warmup_steps": 1},
        "weighting": {"name": method},  # auto_lambda reads a second (validation) batch: both samplers stream
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return load_config(path)


def final_weights(run_dir):
    return load_checkpoint(resolve_checkpoint(run_dir))["model"]


def test_a_streamed_run_equals_an_in_memory_run_and_resumes_exactly(image_dataset, tmp_path, capsys):
    in_memory = train(_config(tmp_path, image_dataset, "in-memory", 8.0), progress=False)
    assert "per batch" not in capsys.readouterr().err
    streamed = train(_config(tmp_path, image_dataset, "streamed", 0.0), progress=False)
    assert "reading rgb_corner from the file per batch" in capsys.readouterr().err
    config = _config(tmp_path, image_dataset, "streamed-resumed", 0.0)
    train(config, progress=False, stop_after=3)
    resumed = train(config, resume=True, progress=False)
    reference = final_weights(in_memory.run_dir)
    for other in (streamed, resumed):
        weights = final_weights(other.run_dir)
        for name, value in reference.items():
            assert torch.equal(value, weights[name]), name
    assert np.isfinite([v.float().sum().item() for v in reference.values()]).all()
