"""The agent variants in configs/agents/ load, and each fits its suite (README "Agents")."""

from pathlib import Path

import pytest

from rlmtl.build import check_head_fits_suite, check_pretrained_image_encoder
from rlmtl.config import load_config
from rlmtl.envs import make_suite

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs" / "agents").glob("*.yaml"))


def test_there_is_a_variant_per_head_family():
    heads = {load_config(path).agent.head for path in CONFIGS}
    assert {"gmm", "chunk", "keyframe", "diffusion"} <= heads


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_an_agent_variant_loads_and_fits_its_suite(path):
    config = load_config(path)
    check_head_fits_suite(config, make_suite(config.env.backend, config.env.suite))
    check_pretrained_image_encoder(config)
