"""Agents are registered by name (`agent.name`); a second agent written as one file
(tests/helpers/plain_agent.py) trains with every kind of weighting method and the TAG probe and
is evaluated in rollout workers, with nothing in rlmtl knowing it."""

from __future__ import annotations

import os
from pathlib import Path

import plain_agent  # noqa: F401  (registers the `plain` agent in this process)
import pytest
import torch
from synthetic_runs import write_config, write_tiny_dataset

from rlmtl.agents import AGENTS, MultiTaskAgent, MultiTaskBC
from rlmtl.config import load_config
from rlmtl.errors import ConfigError
from rlmtl.evaluation.evaluate import evaluate_checkpoint
from rlmtl.evaluation.settings import EvalSettings
from rlmtl.training.trainer import Trainer

HELPERS = Path(__file__).resolve().parents[1] / "helpers"


def test_agents_are_registered_and_an_unknown_name_is_refused_naming_the_key(tmp_path):
    assert AGENTS.get("bc") is MultiTaskBC and "plain" in AGENTS
    config = write_config(tmp_path, "x", "uniform")
    with pytest.raises(ConfigError, match=r"'agent\.name': unknown agent 'gmm' \(registered: bc, plain\)"):
        load_config(config, ["agent.name=gmm"])


@pytest.mark.parametrize("method", ["uniform", "famo", "pcgrad", "auto_lambda"])
def test_a_second_agent_trains_with_every_kind_of_method(tmp_path, method):
    """Loss-based (famo), gradient (pcgrad: `gradient_rows`) and lookahead (auto_lambda:
    `functional_call` of `forward`) methods, through the trainer's own engine."""
    write_tiny_dataset(tmp_path / "data.h5")
    config = load_config(write_config(tmp_path, f"plain-{method}", method, steps=4), ["agent.name=plain", "agent.hidden_dim=8"])
    trainer = Trainer(config, progress=False)
    before = {name: p.detach().clone() for name, p in trainer.parts.agent.named_parameters()}
    trainer.run()
    agent = trainer.parts.agent
    assert type(agent).__name__ == "PlainAgent" and isinstance(agent, MultiTaskAgent)
    moved = {name for name, p in agent.named_parameters() if not torch.equal(p.detach(), before[name])}
    assert moved == set(before)  # the trunk and every head were updated
    payload = torch.load(trainer.last_checkpoint, weights_only=True)
    assert payload["meta"]["config"]["agent"]["name"] == "plain"


def test_the_tag_probe_and_rollout_workers_use_only_the_interface(tmp_path, monkeypatch):
    write_tiny_dataset(tmp_path / "data.h5")
    config = load_config(
        write_config(tmp_path, "plain-probe", "uniform", steps=4), ["agent.name=plain", "agent.hidden_dim=8", "affinity.probe_every=2"]
    )
    trainer = Trainer(config, progress=False)
    trainer.run()
    assert trainer.probe is not None and int(trainer.probe.count) == 2 and torch.isfinite(trainer.probe.affinity()).all()
    # spawned rollout workers load the agent from the checkpoint: they register it as a plugin
    monkeypatch.setenv("RLMTL_PLUGINS", "plain_agent")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HELPERS), os.environ.get("PYTHONPATH", "")]))
    result = evaluate_checkpoint(trainer.run_dir, EvalSettings(episodes_per_task=1, workers=1, progress=False))
    assert result is not None and len(result["per_task"]) == 3
    assert all(row["errors"] == 0 and row["episodes"] == 1 for row in result["per_task"].values())
