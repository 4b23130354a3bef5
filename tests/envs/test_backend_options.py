"""Backend options as a typed class owned by each backend: `Backend.options_class`, carried to the
environments by `EnvSettings.options` (frozen, hashable, picklable, digest-stable)."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import pytest

from rlmtl.build import env_settings
from rlmtl.config import load_config
from rlmtl.envs import BACKENDS, EnvSettings, NoOptions
from rlmtl.envs.metaworld_backend import MetaWorldOptions
from rlmtl.envs.rlbench_backend import RLBenchOptions
from rlmtl.evaluation.episode_log import settings_digest

ROOT = Path(__file__).resolve().parents[2]


def test_each_backend_declares_its_options():
    assert BACKENDS.get("metaworld").options_class is MetaWorldOptions
    assert BACKENDS.get("rlbench").options_class is RLBenchOptions
    for name in BACKENDS.names():
        options = BACKENDS.get(name).options_class
        assert dataclasses.is_dataclass(options) and options.__dataclass_params__.frozen, name
        assert all(f.metadata.get("help") for f in dataclasses.fields(options)), name
    assert RLBenchOptions() == RLBenchOptions(action_mode="keyframe", variation=0, render_mode="opengl")
    with pytest.raises(ValueError, match="action_mode: 'teleport' is not one of keyframe, joint_velocity"):
        RLBenchOptions(action_mode="teleport")
    with pytest.raises(ValueError, match="variation"):
        RLBenchOptions(variation=-2)
    assert MetaWorldOptions() == MetaWorldOptions(camera_fovy=0.0)
    for fovy in (float("nan"), float("inf"), -1.0, 180.0, True):
        with pytest.raises(ValueError, match="camera_fovy"):
            MetaWorldOptions(camera_fovy=fovy)


def test_env_settings_carry_the_options_object():
    config = load_config(ROOT / "configs" / "rlbench10.yaml", ["env.options.variation=2"])
    settings = env_settings(config, "reach_target", video_size=64)
    assert settings.options is config.env.options and settings.options.variation == 2
    assert dataclasses.replace(settings, task="stack_wine").options == settings.options
    copy = pickle.loads(pickle.dumps(settings))  # worker processes rebuild environments from it
    assert copy == settings and hash(copy) == hash(settings) and copy.options == settings.options
    assert {settings: 1}[dataclasses.replace(settings)] == 1
    assert settings != dataclasses.replace(settings, options=RLBenchOptions(variation=3))
    assert EnvSettings("rlbench", "rlbench10", "reach_target").options == RLBenchOptions()  # None = the backend's defaults
    assert env_settings(load_config(None), "reach-v3").options == MetaWorldOptions()
    with pytest.raises(TypeError, match="options of backend 'metaworld' must be MetaWorldOptions, got RLBenchOptions"):
        EnvSettings("metaworld", "mt10", "reach-v3", options=RLBenchOptions())


def test_settings_digests_are_those_of_before_typed_options():
    """Episode logs key episodes by this digest: existing logs must stay valid."""
    assert settings_digest(EnvSettings("metaworld", "mt10", "push-v3")) == "b9a9c4f7a4c1"
    cameras = EnvSettings("metaworld", "mt10", "push-v3", cameras=("corner",), image_size=84, max_episode_steps=300)
    assert settings_digest(cameras) == "44c99a61df82"
    assert settings_digest(env_settings(load_config(ROOT / "configs" / "compare_rgb.yaml"), "reach-v3")) == "de4d69637d64"
    rlbench = ROOT / "configs" / "rlbench10.yaml"
    assert settings_digest(env_settings(load_config(rlbench), "reach_target")) == "286991fa7399"
    assert settings_digest(env_settings(load_config(rlbench, ["env.options.variation=2"]), "reach_target")) == "d911c1e2b371"
    # an option added later keys episodes only when set (its default keeps the digests above)
    zoomed = env_settings(load_config(ROOT / "configs" / "compare_rgb.yaml", ["env.options.camera_fovy=30"]), "reach-v3")
    assert settings_digest(zoomed) != "de4d69637d64"
    assert settings_digest(env_settings(load_config(ROOT / "configs" / "compare_rgb.yaml", ["env.options.camera_fovy=0"]), "reach-v3")) == "de4d69637d64"
