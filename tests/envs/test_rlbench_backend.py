"""The RLBench backend against a test double with RLBench's signatures and exception classes:
settings, seeded scenes, action conversion, the evaluator's episode loop, failures by kind,
shutdown, and live-demo collection through `rlmtl collect`."""

from __future__ import annotations

import gc
import subprocess
import sys
from dataclasses import asdict

import numpy as np
import pytest
import rlbench_double as double
import yaml

import rlmtl.envs.rlbench_backend as backend
from rlmtl.envs import EnvSettings, make_suite
from rlmtl.envs.rlbench_actions import canonical_quaternion, to_rlbench_action
from rlmtl.errors import RlmtlError
from rlmtl.evaluation.rollout import run_episode


@pytest.fixture
def api(monkeypatch):
    environments: list = []
    namespace = double.make_api(environments)
    namespace.environments = environments
    monkeypatch.setattr(backend, "load_api", lambda: namespace)
    yield namespace
    gc.collect()  # envs dropped without close() shut down through their finalizers
    leaked = list(double.LAUNCHED)
    for environment in leaked:
        environment.shutdown()
    assert not leaked, "a test left a simulator running (the next launch in this process would be refused)"


def _settings(**changes) -> EnvSettings:
    base = dict(
        backend="rlbench",
        suite="rlbench10",
        task="reach_target",
        cameras=("front", "wrist"),
        image_size=32,
        options=backend.RLBenchOptions(action_mode="keyframe"),
    )
    base.update(changes)
    return EnvSettings(**base)


def _goal(env) -> np.ndarray:
    return env._task.target


def test_double_has_rlbench_signatures():
    for (name, method), expected in double.RLBENCH_PARAMETERS.items():
        assert double.parameters(getattr(double, name), method) == expected, (name, method)
    assert double.literal_defaults(double.TaskEnvironment, "get_demos") == {
        "live_demos": False,
        "image_paths": False,
        "callable_each_step": None,
        "max_attempts": 10,
        "random_selection": True,
        "from_episode_number": 0,
    }
    assert double.literal_defaults(double.Environment, "__init__")["headless"] is False
    assert double.literal_defaults(double.CameraConfig, "__init__")["image_size"] == (128, 128)
    for error in ("InvalidActionError", "IKError", "ConfigurationPathError"):
        assert issubclass(getattr(double, error), Exception) and not issubclass(getattr(double, error), (ValueError, RuntimeError))


def test_listing_and_specs_need_no_rlbench():
    code = "import sys; from rlmtl.envs import make_suite; s = make_suite('rlbench', 'rlbench10'); print(len(s.task_names), 'rlbench' in sys.modules, 'pyrep' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["10", "False", "False"]
    suite = make_suite("rlbench", "rlbench10")
    assert suite.task_names[0] == "pick_and_lift" and suite.task_names[-1] == "take_umbrella_out_of_umbrella_stand"
    spec = suite.observation_spec(["front"], 128)
    assert spec["state"].shape == (22,) and spec["proprio"].shape == (8,) and spec["rgb_front"].shape == (128, 128, 3)
    assert suite.action_spec().shape == (8,)
    with pytest.raises(KeyError, match="unknown RLBench camera"):
        suite.observation_spec(["corner"], 64)
    assert backend.task_class_name("take_umbrella_out_of_umbrella_stand") == "TakeUmbrellaOutOfUmbrellaStand"


def test_video_rate_follows_the_action_mode():
    suite = make_suite("rlbench", "rlbench10")
    task = suite.task_names[0]
    assert suite.video_fps(task, backend.RLBenchOptions(action_mode="joint_velocity")) == 20.0  # 50 ms simulation steps
    assert suite.video_fps(task, backend.RLBenchOptions()) == 2.0  # keyframes: a viewing rate


def test_without_rlbench_the_error_is_one_line_pointing_at_the_image():
    try:
        import rlbench  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("rlbench is installed here")
    with pytest.raises(RlmtlError) as error:
        backend.load_api()
    assert "docker/rlbench.Dockerfile" in str(error.value) and "\n" not in str(error.value)


def test_observation_config_and_env_construction(api):
    env = make_suite("rlbench", "rlbench10").make_env(
        _settings(video_camera="overhead", video_size=48, options=backend.RLBenchOptions(render_mode="opengl3"))
    )
    (environment,) = api.environments
    assert environment._headless is True
    config = environment._obs_config
    assert config is not double.Environment.__init__.__defaults__[1]  # a fresh ObservationConfig, not RLBench's shared default
    assert config.cameras["front"].rgb and config.cameras["front"].image_size == (32, 32)
    assert config.cameras["front"].render_mode is double.RenderMode.OPENGL3
    assert config.cameras["overhead"].rgb and config.cameras["overhead"].image_size == (48, 48)
    assert not config.cameras["left_shoulder"].rgb and not config.cameras["front"].depth and not config.cameras["front"].mask
    assert isinstance(environment._action_mode.arm_action_mode, double.EndEffectorPoseViaPlanning)
    observation, info = env.reset(seed=5)
    assert set(observation) == {"state", "proprio", "rgb_front", "rgb_wrist"}
    assert observation["rgb_front"].shape == (32, 32, 3) and observation["rgb_front"].dtype == np.uint8
    assert env.render().shape == (48, 48, 3)
    assert info["descriptions"] == ["reach the target 0"]
    env.close()


def test_seeded_scenes_and_variations(api):
    env = make_suite("rlbench", "rlbench10").make_env(_settings())
    _, first = env.reset(seed=11)
    _, other = env.reset(seed=12)
    _, again = env.reset(seed=11)
    np.testing.assert_array_equal(first["scene"], again["scene"])
    assert not np.array_equal(first["scene"], other["scene"])
    env.close()
    env = make_suite("rlbench", "rlbench10").make_env(_settings(options=backend.RLBenchOptions(variation=-1)))
    variations = {int(env.reset(seed=s)[1]["scene"][0]) for s in range(20)}
    assert variations == {0, 1, 2}
    assert int(env.reset(seed=3)[1]["scene"][0]) == int(env.reset(seed=3)[1]["scene"][0])
    env.close()
    with pytest.raises(ValueError, match="action_mode"):
        make_suite("rlbench", "rlbench10").make_env(_settings(options=backend.RLBenchOptions(action_mode="teleport")))


def test_actions_are_normalised_and_sign_canonicalised(api):
    env = make_suite("rlbench", "rlbench10").make_env(_settings())
    env.reset(seed=1)
    target = _goal(env)
    # an unnormalised quaternion with negative w, as a regression head may predict
    _, reward, success, truncated, info = env.step(np.array([*target, 0.0, 0.0, 0.0, -2.0, 0.2], dtype=np.float32))
    sent = env._task.actions[-1]
    np.testing.assert_allclose(sent[3:7], [0, 0, 0, 1])
    assert sent[7] == 0.0 and success and reward == 1.0 and not truncated and info == {"success": True}
    q = canonical_quaternion(np.array([0.3, -0.2, 0.1, -0.5]))
    assert np.isclose(np.linalg.norm(q), 1.0) and q[3] > 0
    np.testing.assert_allclose(canonical_quaternion(np.array([0.0, -1.0, 0.0, 0.0])), [0, 1, 0, 0])
    np.testing.assert_allclose(to_rlbench_action(np.arange(8) * 0.1, "joint_velocity"), [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 1.0])
    env.close()


@pytest.mark.parametrize(
    "pose,failure",
    [
        ([0.2, 0.0, 0.6], "InvalidActionError"),  # below the table: RLBench wraps the planner's ConfigurationPathError
        ([-0.5, 0.0, 1.0], "InvalidActionError"),  # blocked path, likewise
        ([3.0, 0.0, 1.0], "InvalidActionError"),  # outside the workspace
    ],
)
def test_planner_errors_end_the_episode_as_a_failure_by_kind(api, pose, failure):
    env = make_suite("rlbench", "rlbench10").make_env(_settings())
    env.reset(seed=2)
    before, _ = env.reset(seed=2)
    observation, reward, success, truncated, info = env.step(np.array([*pose, 0, 0, 0, 1, 1.0]))
    assert (reward, success, truncated) == (0.0, False, True) and info == {"success": False, "failure": failure}
    np.testing.assert_array_equal(observation["state"], before["state"])
    outcome, _ = run_episode(env, lambda obs: np.array([*pose, 0, 0, 0, 1, 1.0]), scene_seed=2)
    assert not outcome.success and outcome.steps == 1 and outcome.failure == failure
    _, _, _, _, info = env.step(np.array([0.2, 0, 1.0, 0, 0, 0, 0, 1.0]))  # zero quaternion: refused before RLBench
    assert info["failure"] == "InvalidActionError"
    env.close()


def test_evaluator_episode_loop_success_and_step_limit(api):
    env = make_suite("rlbench", "rlbench10").make_env(_settings(max_episode_steps=4))
    targets = []

    def reach_then_grasp(observation):
        goal = env._task.target
        targets.append(goal.copy())
        halfway = observation["proprio"][:3] + (goal - observation["proprio"][:3]) * (0.5 if len(targets) < 2 else 1.0)
        return np.array([*halfway, 0, 0, 0, 1, 0.0 if len(targets) >= 2 else 1.0])

    outcome, episode = run_episode(env, reach_then_grasp, scene_seed=9, record=True)
    assert outcome.success and outcome.steps == 2 and outcome.failure == ""
    assert episode.success.tolist() == [False, True]
    outcome, _ = run_episode(env, lambda obs: np.array([0.2, 0.0, 1.0, 0, 0, 0, 1, 1.0]), scene_seed=9)
    assert not outcome.success and outcome.steps == 4 and outcome.failure == "step_limit"
    env.close()


def test_shutdown_always(api):
    start = double.CALLS["shutdown"]
    env = make_suite("rlbench", "rlbench10").make_env(_settings())
    env.close()
    env.close()
    assert double.CALLS["shutdown"] == start + 1 and not double.LAUNCHED
    env = make_suite("rlbench", "rlbench10").make_env(_settings())
    del env
    gc.collect()
    assert double.CALLS["shutdown"] == start + 2 and not double.LAUNCHED

    class FailingLaunch(api.Environment):
        def launch(self):
            raise RuntimeError("CoppeliaSim did not start")

    api.Environment = FailingLaunch
    with pytest.raises(RuntimeError, match="did not start"):
        make_suite("rlbench", "rlbench10").make_env(_settings())
    gc.collect()
    assert not double.LAUNCHED


def test_collect_records_live_demos(api, tmp_path, monkeypatch):
    # collection runs in pool worker processes (even with one worker): they load the double as a plugin
    monkeypatch.setenv("RLMTL_PLUGINS", "rlbench_double_plugin")
    from rlmtl.config import load_config
    from rlmtl.data.collect import collect
    from rlmtl.data.dataset import load_dataset, read_attrs

    config_path = tmp_path / "rlbench.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "env": {
                    "backend": "rlbench",
                    "suite": "rlbench10",
                    "tasks": ["reach_target", "push_button"],
                    "cameras": ["front"],
                    "image_size": 16,
                },
                "data": {"demos_per_task": 3, "cache_dir": str(tmp_path / "data"), "workers": 1},
                "agent": {"obs_keys": ["state", "rgb_front"]},
            }
        )
    )
    config = load_config(config_path)
    path = collect(config, progress=False)
    attrs = read_attrs(path)
    assert attrs["backend"] == "rlbench" and attrs["tasks"] == ["reach_target", "push_button"]
    data = load_dataset(path, ["reach_target", "push_button"], ["state", "rgb_front"], 8)
    for task in data.per_task:
        assert task.num_demos == 3 and task.actions.shape == (3 * 6, 8)
        assert np.all(task.actions[:, 7] == 0.0)  # the keyframe is the grasp
        assert np.all(task.actions[:, 6] == 1.0)
    # the demos' scenes differ (seeded per attempt) and each label is its demo's target
    assert len({tuple(np.round(a[:3], 6)) for a in data.per_task[0].actions}) == 3
    assert collect(config, progress=False) == path  # cached by fingerprint


def test_collect_reports_when_rlbench_gives_up(api, tmp_path, monkeypatch):
    from rlmtl.data.collect import _WORKER_ENVS, _expert_episode

    settings = _settings(task="stack_wine", cameras=())
    try:
        assert _expert_episode(settings, 4, 0) is not None
        _, env = _WORKER_ENVS.get(settings)
        env._task.demo_failures = 1
        assert _expert_episode(settings, 5, 1) is None  # a failed live demo is a failed attempt
        assert _expert_episode(settings, 5, 1) is not None  # the same scene, tried again, gives its demo
    finally:
        _WORKER_ENVS.close()


@pytest.mark.parametrize("name", ["rlbench10", "rlbench10_famo", "rlbench10_auto_lambda", "rlbench10_cagrad"])
def test_rlbench_configs_load_and_match_the_suite(name):
    from rlmtl.build import env_settings
    from rlmtl.config import load_config

    config = load_config(f"configs/{name}.yaml")
    suite = make_suite(config.env.backend, config.env.suite)
    spec = suite.observation_spec(config.env.cameras, config.env.image_size)
    assert set(config.agent.obs_keys) <= set(spec) and config.data.demos_per_task == 100
    assert config.env.cameras == ["front", "wrist", "left_shoulder", "right_shoulder"] and config.env.image_size == 128
    assert asdict(env_settings(config, "reach_target").options) == {"action_mode": "keyframe", "variation": 0, "render_mode": "opengl"}


@pytest.mark.parametrize(
    ("root", "message"),
    [(None, "COPPELIASIM_ROOT is not set"), ("{tmp}", "libcoppeliaSim.so not found: COPPELIASIM_ROOT is not a CoppeliaSim 4.1.0 folder")],
)
def test_install_script_refuses_without_coppeliasim_in_one_line(tmp_path, root, message):
    import os
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "scripts" / "install_rlbench.sh"
    env = {k: v for k, v in os.environ.items() if k != "COPPELIASIM_ROOT"}
    if root is not None:
        env["COPPELIASIM_ROOT"] = root.format(tmp=tmp_path)
    done = subprocess.run(["bash", str(script), sys.executable], capture_output=True, text=True, env=env, timeout=60)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and message in lines[0], done.stderr
