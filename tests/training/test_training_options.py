"""Training basics: the weights' moving average (train.ema_decay) is what evaluation loads and
resumes exactly; held-out demos (data.val_demos) are left out of training and their per-task loss
is logged; train.precision=bf16 runs the step under bfloat16 autocast."""

from __future__ import annotations

import json

import pytest
import torch
from synthetic_runs import TASKS, write_config, write_tiny_dataset
from toy_mtl import small_agent

from rlmtl.build import agent_from_checkpoint
from rlmtl.config import load_config
from rlmtl.errors import CheckpointError, ConfigError
from rlmtl.training.checkpoint import load_checkpoint
from rlmtl.training.ema import ParameterAverage
from rlmtl.training.trainer import Trainer, train


def test_the_average_follows_tensorflows_rule():
    agent = small_agent(2)
    average = ParameterAverage(agent, decay=0.9)
    expected = [p.detach().clone() for p in agent.parameters()]
    for update in range(30):
        with torch.no_grad():
            for p in agent.parameters():
                p.add_(torch.randn_like(p))
        average.update()
        d = min(0.9, (1 + update) / (10 + update))
        expected = [d * e + (1 - d) * p.detach() for e, p in zip(expected, agent.parameters())]
    for got, want in zip(average.averages, expected):
        torch.testing.assert_close(got, want)


def test_evaluation_loads_the_average_and_a_resumed_run_continues_it_exactly(tmp_path):
    write_tiny_dataset(tmp_path / "data.h5")
    straight = train(load_config(write_config(tmp_path, "straight", "uniform", steps=6), ["train.ema_decay=0.5"]), progress=False)
    config = load_config(write_config(tmp_path, "split", "uniform", steps=6), ["train.ema_decay=0.5"])
    train(config, progress=False, stop_after=3)
    resumed = train(config, resume=True, progress=False)
    a, b = load_checkpoint(straight.last_checkpoint), load_checkpoint(resumed.last_checkpoint)
    assert a["ema"]["updates"] == b["ema"]["updates"] == 6
    for key, value in a["ema"].items():
        torch.testing.assert_close(value, b["ema"][key], rtol=0, atol=0)
    agent = agent_from_checkpoint(a)
    for name, parameter in agent.named_parameters():
        torch.testing.assert_close(parameter.detach(), a["ema"][f"average.{name}"], rtol=0, atol=0)
        assert not torch.equal(parameter.detach(), a["model"][name])  # the average, not the last weights
    with pytest.raises(CheckpointError, match=r"train\.ema_decay=0\.5"):
        Trainer(load_config(write_config(tmp_path, "split", "uniform", steps=8)), resume=True, progress=False)


def test_ema_decay_out_of_range_is_refused_naming_the_key(tmp_path):
    for value, why in (("1.0", r"must be in \[0, 1\)"), ("-0.1", r"must be in \[0, 1\)"), (".nan", "expected a finite number")):
        with pytest.raises(ConfigError, match=rf"'train\.ema_decay':? {why}"):
            load_config(write_config(tmp_path, "x", "uniform"), [f"train.ema_decay={value}"])


def test_held_out_demos_are_not_trained_on_and_their_loss_is_logged(tmp_path):
    write_tiny_dataset(tmp_path / "data.h5")  # 2 demos per task, 12 and 13 steps
    trainer = Trainer(load_config(write_config(tmp_path, "val", "uniform", steps=4), ["data.val_demos=1"]), progress=False)
    assert trainer.parts.sampler.flat.counts.tolist() == [12.0] * len(TASKS)  # the first demo of each task only
    trainer.run()
    records = [json.loads(line) for line in (trainer.run_dir / "metrics.jsonl").read_text().splitlines()]
    validation = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in validation] == [1, 2, 3, 4]
    assert set(validation[-1]["val_loss"]) == set(TASKS)
    assert all(v > 0 for r in validation for v in r["val_loss"].values())


def test_holding_out_every_demo_is_refused_naming_the_key(tmp_path):
    write_tiny_dataset(tmp_path / "data.h5")
    with pytest.raises(ConfigError, match=r"'data\.val_demos' = 2 leaves task .* no training demo"):
        Trainer(load_config(write_config(tmp_path, "val", "uniform", steps=4), ["data.val_demos=2"]), progress=False)


def test_bf16_precision_runs_the_step_under_autocast_and_keeps_fp32_weights(tmp_path):
    write_tiny_dataset(tmp_path / "data.h5")
    first = {}
    for precision in ("fp32", "bf16"):
        trainer = Trainer(load_config(write_config(tmp_path, precision, "uniform", steps=2), [f"train.precision={precision}"]), progress=False)
        losses, _ = trainer.train_step()
        first[precision] = losses
        assert losses.dtype == torch.float32 and torch.isfinite(losses).all()
        assert all(p.dtype == torch.float32 for p in trainer.parts.agent.parameters())
        trainer.release()
    assert not torch.equal(first["fp32"], first["bf16"])  # bfloat16 matmuls round differently
    torch.testing.assert_close(first["bf16"], first["fp32"], rtol=5e-2, atol=1e-3)
    with pytest.raises(ConfigError, match=r"'train\.precision' must be one of fp32, bf16, got 'fp16'"):
        load_config(write_config(tmp_path, "x", "uniform"), ["train.precision=fp16"])
