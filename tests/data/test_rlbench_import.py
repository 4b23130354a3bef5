"""`rlmtl import-rlbench` on fixture folders in both layouts and both numpy pickle layouts, then
training from the result with no simulator."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from rlbench_fixtures import EXPECTED_KEYFRAMES, frame, trajectory, write_rlbench_dataset

from rlmtl.cli import main
from rlmtl.config import dataset_path, load_config
from rlmtl.data.dataset import load_dataset, read_attrs
from rlmtl.envs.rlbench_actions import canonical_quaternion

TASKS = ["reach_target", "stack_wine"]


def _config(tmp_path, **env) -> str:
    data = {
        "name": "rlb",
        "out_dir": str(tmp_path / "runs"),
        "env": {"backend": "rlbench", "suite": "rlbench10", "tasks": TASKS, "cameras": ["front"], "image_size": 8, **env},
        "data": {"demos_per_task": 2, "cache_dir": str(tmp_path / "cache"), "workers": 1},
        "agent": {"obs_keys": ["state", "rgb_front"], "hidden_dim": 32, "num_layers": 1, "image_channels": [8, 8]},
        "train": {"steps": 4, "batch_per_task": 4, "log_every": 2, "checkpoint_every": 2, "warmup_steps": 1},
    }
    path = tmp_path / "rlbench.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _expected_actions(steps: np.ndarray) -> np.ndarray:
    traj = trajectory()
    rows = []
    for t in steps:
        k = next(k for k in EXPECTED_KEYFRAMES if k > t)
        rows.append(np.concatenate([traj["pose"][k, :3], canonical_quaternion(traj["pose"][k, 3:]), [traj["gripper"][k]]]))
    return np.asarray(rows, dtype=np.float32)


@pytest.mark.parametrize("layout,numpy_layout,protocol", [("upstream", 1, 2), ("upstream", 2, 5), ("peract", 1, 4), ("peract", 2, 4)])
def test_import_gives_the_expected_dataset(layout, numpy_layout, protocol, tmp_path, capsys):
    root = tmp_path / "rlbench_data"
    # variation 1 episodes must be skipped (env.options.variation = 0); 3 variation-0 episodes, 2 kept
    write_rlbench_dataset(
        root, "reach_target", layout, {1: 1, 0: 3}, cameras=("front", "wrist"), size=8, numpy_layout=numpy_layout, protocol=protocol
    )
    write_rlbench_dataset(root, "stack_wine", layout, {0: 2}, cameras=("front",), size=8, numpy_layout=numpy_layout, protocol=protocol)
    config_path = _config(tmp_path)
    assert main(["import-rlbench", str(root), config_path, "--no-progress"]) == 0
    path = dataset_path(load_config(config_path))
    assert capsys.readouterr().out.strip() == str(path)
    attrs = read_attrs(path)
    assert attrs["backend"] == "rlbench" and attrs["suite"] == "rlbench10" and attrs["tasks"] == TASKS
    assert attrs["rlbench"]["variation"] == 0 and attrs["action_spec"]["shape"] == [8]
    data = load_dataset(path, TASKS, ["state", "proprio", "rgb_front"], 8)
    expected = _expected_actions(np.arange(15))
    reach = data.per_task[0]
    assert reach.num_demos == 2 and reach.actions.shape == (30, 8)
    np.testing.assert_allclose(reach.actions, np.concatenate([expected, expected]), atol=1e-6)
    # upstream numbers episodes per variation (0, 1 of variation0); PerAct numbers them across variations (1, 2)
    first, second = (0, 1) if layout == "upstream" else (1, 2)
    np.testing.assert_array_equal(reach.observations["rgb_front"][3], frame("front", 3, first, 8))
    np.testing.assert_array_equal(reach.observations["rgb_front"][15 + 4], frame("front", 4, second, 8))
    assert reach.observations["state"].shape == (30, 22) and reach.observations["proprio"].shape == (30, 8)
    np.testing.assert_allclose(reach.observations["proprio"][:15, :3], trajectory()["pose"][:15, :3], atol=1e-6)
    assert data.per_task[1].num_demos == 2


def test_keyframe_samples_and_shortfall(tmp_path, capsys):
    root = tmp_path / "data"
    write_rlbench_dataset(root, "reach_target", "upstream", {0: 1}, size=8)
    write_rlbench_dataset(root, "stack_wine", "upstream", {0: 2}, size=8)
    out = tmp_path / "keyframes.h5"
    assert main(["import-rlbench", str(root), _config(tmp_path), "--out", str(out), "--samples", "keyframes", "--no-progress"]) == 0
    assert "fewer demos than data.demos_per_task (reach_target: 1/2)" in capsys.readouterr().err
    data = load_dataset(out, TASKS, ["state"], 8)
    np.testing.assert_allclose(data.per_task[0].actions, _expected_actions(np.array([0, 4, 7])), atol=1e-6)


def test_import_errors_name_the_path(tmp_path, capsys):
    root = tmp_path / "data"
    write_rlbench_dataset(root, "reach_target", "upstream", {0: 1}, cameras=("wrist",), size=8)
    config = _config(tmp_path)
    assert main(["import-rlbench", str(root), config, "--no-progress"]) == 2
    assert f"{root / 'stack_wine'}: no such task folder" in capsys.readouterr().err
    assert main(["import-rlbench", str(root), config, "env.tasks=[reach_target]", "--no-progress"]) == 2
    assert (
        f"{root / 'reach_target' / 'variation0' / 'episodes' / 'episode0' / 'front_rgb'}: missing image folder" in capsys.readouterr().err
    )
    write_rlbench_dataset(root, "stack_wine", "upstream", {0: 1}, cameras=("front",), size=8)
    assert main(["import-rlbench", str(root), config, "env.tasks=[stack_wine]", "env.options.variation=2", "--no-progress"]) == 2
    assert "no episode of variation 2" in capsys.readouterr().err
    assert main(["import-rlbench", str(tmp_path / "nowhere"), config, "--no-progress"]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert (
        main(
            [
                "import-rlbench",
                str(root),
                config,
                "env.backend=metaworld",
                "env.suite=mt10",
                "env.cameras=[]",
                "agent.obs_keys=[state]",
                "--no-progress",
            ]
        )
        == 2
    )
    assert "use an RLBench config" in capsys.readouterr().err
    assert not dataset_path(load_config(config)).exists()


def _imported_config(tmp_path) -> str:
    """The config of an RLBench dataset imported from PerAct-layout fixture demos (2 per task)."""
    root = tmp_path / "data"
    for task in TASKS:
        write_rlbench_dataset(root, task, "peract", {0: 2}, size=8)
    config = _config(tmp_path)
    assert main(["import-rlbench", str(root), config, "--no-progress"]) == 0
    return config


def test_training_from_an_imported_dataset_needs_no_simulator(tmp_path):
    config = _imported_config(tmp_path)
    assert main(["train", config, "--no-progress"]) == 0
    assert (tmp_path / "runs" / "rlb" / "checkpoints").is_dir()


def test_renderer_and_image_size_are_recorded_and_a_mismatch_warned(tmp_path, capsys):
    root = tmp_path / "data"
    for task in TASKS:
        write_rlbench_dataset(root, task, "upstream", {0: 2}, cameras=("front",), size=8)
    (root / "open_drawer").mkdir()  # a task of RLBench, not of rlbench10
    config = _config(tmp_path)
    assert main(["import-rlbench", str(root), config, "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"warning: {root / 'open_drawer'}: not a task of rlbench10; skipped" in err
    path = dataset_path(load_config(config))
    attrs = read_attrs(path)
    assert attrs["renderer"] == "opengl3" and attrs["image_size"] == 8  # the generator's default renderer
    assert main(["train", config, "--no-progress"]) == 0  # the config renders with opengl (RLBenchOptions' default)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "rendered with" in line]
    assert warnings == [
        f"rlmtl train: warning: {path} was rendered with 'opengl3' but training (env.options.render_mode) uses 'opengl': the policy sees images of another renderer"
    ]
    assert main(["import-rlbench", str(root), config, "--renderer", "opengl", "--out", str(tmp_path / "gl.h5"), "--no-progress"]) == 0
    assert read_attrs(tmp_path / "gl.h5")["renderer"] == "opengl"
    assert main(["import-rlbench", str(root), config, "--renderer", "vulkan", "--out", str(tmp_path / "vk.h5"), "--no-progress"]) == 2
    assert "--renderer must be one of opengl, opengl3, got 'vulkan'" in capsys.readouterr().err
    assert not (tmp_path / "vk.h5").exists()
    assert main(["train", config, f"data.path={tmp_path / 'gl.h5'}", "name=gl", "--no-progress"]) == 0
    assert "rendered with" not in capsys.readouterr().err
    assert main(["train", config, f"data.path={tmp_path / 'gl.h5'}", "name=big", "env.image_size=16", "--no-progress"]) == 2
    assert f"{tmp_path / 'gl.h5'}: the dataset's images are 8x8 but env.image_size is 16" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "big").exists()


def test_rgb_is_resized_with_rlbenchs_filter_and_depth_with_nearest(tmp_path):
    from PIL import Image

    from rlmtl.envs.rlbench_format import read_png

    ramp = (np.arange(16)[None, :, None] * 16 + np.zeros((16, 1, 3))).astype(np.uint8)
    path = tmp_path / "0.png"
    Image.fromarray(ramp).save(path)
    expected = np.asarray(Image.fromarray(ramp).resize((6, 6)))  # what RLBench's _resize_if_needed makes
    np.testing.assert_array_equal(read_png(path, 6, blend=True), expected)
    nearest = read_png(path, 6)
    assert set(np.unique(nearest)) <= set(np.unique(ramp)) and not np.array_equal(nearest, expected)


def test_the_keyframe_head_trains_on_imported_keyframes_and_gives_actions_rlbench_accepts(tmp_path):
    import torch

    from rlmtl.build import agent_from_checkpoint, check_head_fits_suite
    from rlmtl.envs import make_suite
    from rlmtl.envs.rlbench_actions import to_rlbench_action
    from rlmtl.errors import ConfigError
    from rlmtl.training.checkpoint import load_checkpoint

    config = _imported_config(tmp_path)
    assert main(["train", config, "agent.head=keyframe", "--no-progress"]) == 0
    agent = agent_from_checkpoint(load_checkpoint(tmp_path / "runs" / "rlb" / "checkpoints" / "step_00000004.pt"))
    observation = {"state": torch.randn(2, agent.obs_mean.shape[1]), "rgb_front": torch.randint(0, 256, (2, 8, 8, 3), dtype=torch.uint8)}
    for action in agent.act_batch(observation, torch.tensor([0, 1])).numpy():
        assert action[7] in (0.0, 1.0) and action[6] >= 0
        np.testing.assert_allclose(to_rlbench_action(action, "keyframe"), action, atol=1e-6)  # already unit, canonical and discrete
    joint = load_config(config, ["agent.head=keyframe", "env.options.action_mode=joint_velocity"])
    with pytest.raises(ConfigError, match=r"'agent\.head': keyframe predicts keyframe_pose actions, but rlbench suite rlbench10 takes continuous"):
        check_head_fits_suite(joint, make_suite("rlbench", "rlbench10"))
