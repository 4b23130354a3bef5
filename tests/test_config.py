import re
from pathlib import Path

import pytest
import yaml

from rlmtl.config import RunConfig, apply_overrides, config_from_dict, config_to_dict, dataset_path, field_help, load_config
from rlmtl.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_and_overrides():
    config = load_config(
        None, ["train.steps=123", "env.tasks=[reach-v3]", "weighting.name=famo", "weighting.params.gamma=0.01", "train.lr=2e-3"]
    )
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
    assert base == dataset_path(load_config(None, ["train.steps=5", "weighting.name=famo"]))
    assert base != dataset_path(load_config(None, ["data.demos_per_task=7"]))
    assert base != dataset_path(load_config(None, ["data.seed=1"]))
    assert base != dataset_path(load_config(None, ["data.steps_after_success=20"]))
    assert base == dataset_path(load_config(None, ["data.steps_after_success=0"]))  # the default keeps cached names
    assert base != dataset_path(load_config(None, ["env.options.camera_fovy=30"]))
    assert base == dataset_path(load_config(None, ["env.options.camera_fovy=0"]))  # the default keeps cached names
    assert dataset_path(load_config(None, ["data.path=/x/y.h5"])) == Path("/x/y.h5")


def test_every_field_has_help():
    rows = field_help()
    assert len(rows) > 30
    assert all(text for _, _, text in rows), [key for key, _, text in rows if not text]


# ----------------------------------------------------------------------------- plug-in sections


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({"env": {"tasks": ["reach-v3"]}, "weighting": {"name": "famo"}}))
    return path


def test_misspelt_weighting_parameter_names_the_valid_keys(tiny):
    with pytest.raises(ConfigError) as error:
        load_config(tiny, ["weighting.params.bogus=1"])
    message = str(error.value)
    assert message == (
        f"{tiny} + overrides: 'weighting.params.bogus' is not a parameter of weighting 'famo' (its parameters: w_lr, gamma, min_losses)"
    )
    with pytest.raises(ConfigError, match=r"'weighting.params.x' is not a parameter of weighting 'uniform' \(its parameters: none\)"):
        load_config(None, ["weighting.params.x=1"])


def test_wrongly_typed_weighting_parameter(tiny):
    with pytest.raises(ConfigError) as error:
        load_config(tiny, ["weighting.params.w_lr=fast"])
    assert str(error.value) == f"{tiny} + overrides: 'weighting.params.w_lr': expected a number, got 'fast'"
    with pytest.raises(ConfigError, match=r"'weighting.params.min_losses': expected a number or a list, got \[0, 'x'\]"):
        load_config(tiny, ["weighting.params.min_losses=[0, x]"])
    with pytest.raises(ConfigError, match=r"'weighting.params.lr': expected a number or null"):
        load_config(tiny, ["weighting.name=hydalearn", "weighting.params.lr=fast"])
    with pytest.raises(ConfigError, match=r"'weighting.params.vectorize': expected true or false"):
        load_config(tiny, ["weighting.name=auto_lambda", "weighting.params.vectorize=1"])
    # values are converted to the declared types; only the given keys are kept
    config = load_config(tiny, ["weighting.params.w_lr=2e-3", "weighting.params.min_losses=[0, 1]"])
    assert config.weighting.params == {"w_lr": 0.002, "min_losses": [0.0, 1.0]}
    assert isinstance(config.weighting.params["min_losses"][0], float)
    assert load_config(tiny, ["weighting.name=hydalearn", "weighting.params.lr=null"]).weighting.params == {"lr": None}


def test_unknown_weighting_name_lists_the_registered_ones(tiny):
    with pytest.raises(ConfigError, match=r"'weighting.name': unknown weighting 'famoo' \(registered: auto_lambda, .*famo, .*uniform\)"):
        load_config(tiny, ["weighting.name=famoo"])
    with pytest.raises(ConfigError, match=r"unknown weighting 'cagradd' in 'auto_lambda\+cagradd'"):
        load_config(tiny, ["weighting.name=auto_lambda+cagradd"])


def test_composition_params_nested_or_flat(tiny):
    name = "weighting.name=auto_lambda+cagrad"
    config = load_config(tiny, [name, "weighting.params.auto_lambda.meta_lr=1e-3", "weighting.params.cagrad.calpha=1"])
    assert config.weighting.params == {"auto_lambda": {"meta_lr": 0.001}, "cagrad": {"calpha": 1.0}}
    flat = load_config(tiny, [name, "weighting.params.meta_lr=1e-3", "weighting.params.cagrad.rescale=2"])
    assert flat.weighting.params == {"meta_lr": 0.001, "cagrad": {"rescale": 2}}
    with pytest.raises(
        ConfigError, match=r"'weighting.params.cagrad.bogus' is not a parameter of weighting 'cagrad' \(its parameters: calpha, "
    ):
        load_config(tiny, [name, "weighting.params.cagrad.bogus=1"])
    with pytest.raises(ConfigError, match=r"'weighting.params.cagrad.calpha': expected a number, got 'x'"):
        load_config(tiny, [name, "weighting.params.cagrad.calpha=x"])
    with pytest.raises(ConfigError, match=r"'weighting.params.calpha' is not a parameter of weighting 'auto_lambda'"):
        load_config(tiny, [name, "weighting.params.calpha=1"])  # flat keys are the first method's
    with pytest.raises(ConfigError, match=r"'weighting.params.fd_radius': with 'weighting.params.auto_lambda' given"):
        load_config(tiny, [name, "weighting.params.auto_lambda.meta_lr=1e-3", "weighting.params.fd_radius=0.1"])


def test_backend_option_given_to_the_wrong_backend(tiny):
    with pytest.raises(ConfigError) as error:
        load_config(tiny, ["env.options.action_mode=keyframe"])
    assert str(error.value) == f"{tiny} + overrides: 'env.options.action_mode' is not an option of backend 'metaworld' (its options: camera_fovy)"
    rlbench = ROOT / "configs" / "rlbench10.yaml"
    with pytest.raises(
        ConfigError, match=r"'env.options.bogus' is not an option of backend 'rlbench' \(its options: action_mode, variation, render_mode\)"
    ):
        load_config(rlbench, ["env.options.bogus=1"])
    with pytest.raises(ConfigError, match=r"'env.backend': unknown backend 'mujoco' \(registered: (\w+, )*metaworld, rlbench(, \w+)*\)"):
        load_config(tiny, ["env.backend=mujoco"])
    with pytest.raises(ConfigError, match=r"unknown key 'env.variation' .*backend options go in 'env.options'"):
        load_config(tiny, ["env.variation=2"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("env.options.action_mode=teleport", "'env.options.action_mode': 'teleport' is not one of keyframe, joint_velocity"),
        ("env.options.render_mode=vulkan", "'env.options.render_mode': 'vulkan' is not one of opengl, opengl3"),
        ("env.options.variation=-2", "'env.options.variation': -2 must be -1 (random) or a variation number >= 0"),
        ("env.options.variation=first", "'env.options.variation': expected an integer, got 'first'"),
    ],
)
def test_bad_rlbench_option_value(override, message):
    path = ROOT / "configs" / "rlbench10.yaml"
    with pytest.raises(ConfigError) as error:
        load_config(path, [override])
    assert str(error.value) == f"{path} + overrides: {message}"


def test_rlbench_options_round_trip():
    from rlmtl.envs.rlbench_backend import RLBenchOptions

    config = load_config(ROOT / "configs" / "rlbench10.yaml", ["env.options.variation=2", "env.options.action_mode=joint_velocity"])
    assert config.env.options == RLBenchOptions(action_mode="joint_velocity", variation=2, render_mode="opengl")
    data = config_to_dict(config)
    assert data["env"]["options"] == {"action_mode": "joint_velocity", "variation": 2, "render_mode": "opengl"}
    assert yaml.safe_load(yaml.safe_dump(data)) == data  # plain data, as checkpoints and config.yaml store it
    again = config_from_dict(data, "checkpoint config")
    assert again == config and again.env.options == config.env.options
    metaworld = config_to_dict(load_config(None))
    assert metaworld["env"]["options"] == {"camera_fovy": 0.0} and config_from_dict(metaworld) == load_config(None)
    metaworld["env"]["options"] = {}  # as run folders wrote it before Meta-World had options
    assert config_from_dict(metaworld) == load_config(None)


def test_configs_written_before_env_options_still_load():
    """Checkpoints and run folders hold the old flat env keys (every backend had all three)."""
    from rlmtl.envs.metaworld_backend import MetaWorldOptions
    from rlmtl.envs.rlbench_backend import RLBenchOptions

    old = config_to_dict(load_config(None))
    del old["env"]["options"]
    old["env"].update(action_mode="keyframe", variation=0, render_mode="opengl")
    assert config_from_dict(old, "old checkpoint").env.options == MetaWorldOptions()
    old_rlbench = config_to_dict(load_config(ROOT / "configs" / "rlbench10.yaml"))
    del old_rlbench["env"]["options"]
    old_rlbench["env"].update(action_mode="joint_velocity", variation=3, render_mode="opengl3")
    assert config_from_dict(old_rlbench).env.options == RLBenchOptions("joint_velocity", 3, "opengl3")


def test_dataset_file_names_do_not_change():
    """Cached datasets keep the names they had before backends had typed options."""
    mt10 = dataset_path(load_config(ROOT / "configs" / "mt10.yaml", ["data.demos_per_task=50"]))
    rlbench = ROOT / "configs" / "rlbench10.yaml"
    assert mt10.name == "mt10-state-50demos-seed0-99e69373c8.h5"
    views = "rlbench10-front-wrist-left_shoulder-right_shoulder-100demos-seed0"
    assert dataset_path(load_config(rlbench)).name == f"{views}-d8d4f663fd.h5"
    assert dataset_path(load_config(rlbench, ["env.options.variation=2"])).name == f"{views}-03b55855c5.h5"
    assert dataset_path(load_config(rlbench, ["env.options.action_mode=joint_velocity"])).name == f"{views}-1813542e1c.h5"


def test_config_keys_and_plugin_sections_have_help():
    from rlmtl.cli import main

    rows = {key: text for key, _, text in field_help()}
    assert "env.options" in rows and "env.action_mode" not in rows
    assert main(["config"]) == 0


@pytest.mark.parametrize(
    "key",
    [
        "train.lr",
        "train.weight_decay",
        "train.grad_clip",
        "train.min_lr_ratio",
        "data.max_attempts_per_demo",
        "data.attempt_timeout_s",
        "eval.episode_timeout_s",
        "weighting.params.w_lr",
    ],
)
@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", "nan", "-inf"])
def test_nan_and_inf_are_config_errors_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=rf"'{re.escape(key)}': expected a finite number, got -?(nan|inf)"):
        load_config(None, ["weighting.name=famo", f"{key}={value}"])


@pytest.mark.parametrize(
    ("key", "value"), [("train.weight_decay", -0.1), ("data.max_attempts_per_demo", 0.5), ("agent.image_channels", "[8,4]")]
)
def test_ranges_of_keys_that_had_none(key, value):
    with pytest.raises(ConfigError, match=re.escape(repr(key))):
        load_config(None, [f"{key}={value}"])


@pytest.mark.parametrize("value", ["-1", "true", ".nan", "1.5", "many", "1001"])
def test_bad_video_episodes_is_one_line_naming_the_key(value):
    with pytest.raises(ConfigError, match=r"'eval\.video_episodes'") as refused:
        load_config(None, [f"eval.video_episodes={value}"])
    assert "\n" not in str(refused.value)


def test_video_episodes_defaults_to_three_and_may_be_zero():
    assert load_config(None).eval.video_episodes == 3
    assert load_config(None, ["eval.video_episodes=0"]).eval.video_episodes == 0


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "180", "true"])
def test_camera_fovy_is_checked(value):
    with pytest.raises(ConfigError, match=r"'env\.options\.camera_fovy'"):
        load_config(None, [f"env.options.camera_fovy={value}"])


@pytest.mark.parametrize("value, match", [("-1", "must be >= 0"), ("100001", "must be <= 100000")])
def test_steps_after_success_is_range_checked(value, match):
    with pytest.raises(ConfigError, match=rf"'data\.steps_after_success' {match}"):
        load_config(None, [f"data.steps_after_success={value}"])
