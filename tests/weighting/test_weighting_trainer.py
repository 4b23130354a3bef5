"""Every registered weighting method trains through rlmtl's trainer and resumes exactly."""

import pytest
import torch
import yaml
from conftest import tiny_config_dict

from rlmtl.config import load_config
from rlmtl.data.collect import collect
from rlmtl.training.trainer import train
from rlmtl.weighting import WEIGHTINGS, make_weighting

METHODS = WEIGHTINGS.names() + [name for name in ("auto_lambda+cagrad",) if {"auto_lambda", "cagrad"} <= set(WEIGHTINGS.names())]


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weighting-trainer")
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config_dict(folder, train={"steps": 12, "checkpoint_every": 6, "log_every": 3, "warmup_steps": 2})))
    collect(load_config(path), progress=False)
    return path


def overrides_for(method: str, name: str) -> list[str]:
    overrides = [f"name={name}", f"weighting.name={method}"]
    if make_weighting(method, 2).requirements.primary_tasks:
        overrides.append("weighting.primary_tasks=[reach-v3]")
    return overrides


def last_checkpoint(run_dir):
    return torch.load(sorted((run_dir / "checkpoints").glob("step_*.pt"))[-1], weights_only=True)


@pytest.mark.parametrize("method", METHODS)
def test_method_trains_and_resumes_exactly(tiny_dataset, method):
    torch.manual_seed(0)
    straight = train(load_config(tiny_dataset, overrides_for(method, f"{method}-straight")), progress=False)
    train(load_config(tiny_dataset, overrides_for(method, f"{method}-split")), progress=False, stop_after=6)
    resumed = train(load_config(tiny_dataset, overrides_for(method, f"{method}-split")), resume=True, progress=False)
    a, b = last_checkpoint(straight.run_dir), last_checkpoint(resumed.run_dir)
    assert a["step"] == b["step"] == 12
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0, msg=f"{method}: model {key}")
    assert a["weighting"].keys() == b["weighting"].keys()
    for key in a["weighting"]:
        torch.testing.assert_close(a["weighting"][key], b["weighting"][key], rtol=0, atol=0, msg=f"{method}: state {key}")
    assert all(torch.isfinite(v).all() for v in a["model"].values())
