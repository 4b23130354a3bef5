from pathlib import Path

import pytest
import yaml

from rlmtl.config import RunConfig, apply_overrides, dataset_path, field_help, load_config
from rlmtl.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_and_overrides():
    config = load_config(None, ["train.steps=123", "env.tasks=[reach-v3]", "weighting.params.gamma=0.01", "train.lr=2e-3"])
    assert config.train.steps == 123
    assert config.env.tasks == ["reach-v3"]
    assert config.weighting.params == {"gamma": 0.01}
    assert config.train.lr == pytest.approx(2e-3)
    assert isinstance(config.train.lr, float)


@pytest.mark.parametrize("name", ["mt10.yaml", "mt10_rgb.yaml"])
def test_shipped_configs_load(name):
    config = load_config(ROOT / "configs" / name)
    assert isinstance(config, RunConfig)


def test_unknown_key_names_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"train": {"stepz": 3}}))
    with pytest.raises(ConfigError, match=r"bad.yaml.*'train.stepz'"):
        load_config(path)


def test_unknown_override_key():
    with pytest.raises(ConfigError, match="'agent.widht'"):
        load_config(None, ["agent.widht=3"])


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.steps=abc", "train.steps"),
        ("train.steps=1.5", "train.steps"),
        ("train.steps=true", "train.steps"),
        ("eval.video=yes please", "eval.video"),
        ("env.tasks=reach-v3", "env.tasks"),
        ("train.steps=0", "train.steps"),
        ("train.lr=-1", "train.lr"),
        ("eval.video_format=avi", "eval.video_format"),
        ("train=3", "train"),
    ],
)
def test_bad_values_name_the_key(override, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        load_config(None, [override])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml"):
        load_config(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listing)


def test_image_keys_need_cameras():
    with pytest.raises(ConfigError, match="rgb_corner"):
        load_config(None, ["agent.obs_keys=[rgb_corner]"])
    assert load_config(None, ["agent.obs_keys=[rgb_corner]", "env.cameras=[corner]"]).env.cameras == ["corner"]


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["train.steps"])
    with pytest.raises(ConfigError, match="empty key"):
        apply_overrides({}, ["train..steps=3"])


def test_dataset_path_depends_on_collection_settings_only():
    base = dataset_path(load_config(None))
    assert base == dataset_path(load_config(None, ["train.steps=5", "weighting.name=x"]))
    assert base != dataset_path(load_config(None, ["data.demos_per_task=7"]))
    assert base != dataset_path(load_config(None, ["data.seed=1"]))
    assert dataset_path(load_config(None, ["data.path=/x/y.h5"])) == Path("/x/y.h5")


def test_every_field_has_help():
    rows = field_help()
    assert len(rows) > 30
    assert all(text for _, _, text in rows), [key for key, _, text in rows if not text]
