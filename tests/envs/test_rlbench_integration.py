"""Integration tests in the real CoppeliaSim (inside docker/rlbench.Dockerfile's image, with Xvfb).

They run whenever `rlbench` imports and are skipped elsewhere, with the reason in the pytest
summary (`pytest -rs`). One PyRep instance per process (PyRep README.md:185-187): every test uses
the module's one simulator, switching tasks in it, and nothing here launches a second one."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("rlbench", reason="rlbench is not installed (needs CoppeliaSim 4.1.0 + PyRep; run inside docker/rlbench.Dockerfile)")

import rlbench_double as double  # noqa: E402

from rlmtl.envs import EnvSettings, ProcessEnvs, make_suite  # noqa: E402
from rlmtl.envs.rlbench_backend import RLBenchOptions, load_api  # noqa: E402
from rlmtl.evaluation.rollout import run_episode  # noqa: E402

pytestmark = pytest.mark.rlbench
SETTINGS = EnvSettings(
    "rlbench",
    "rlbench10",
    "reach_target",
    cameras=("front", "wrist"),
    image_size=64,
    max_episode_steps=5,
    options=RLBenchOptions(action_mode="keyframe"),
)


@pytest.fixture(scope="module")
def envs():
    kept = ProcessEnvs()
    yield kept
    kept.close()


@pytest.fixture
def env(envs):
    return envs.get(SETTINGS)[1]


def test_real_classes_match_the_double():
    api = load_api()
    for (name, method), expected in double.RLBENCH_PARAMETERS.items():
        if name == "TaskEnvironment":
            from rlbench.task_environment import TaskEnvironment as cls
        else:
            cls = getattr(api, name)
        assert double.parameters(cls, method) == expected, (name, method)
    from rlbench.task_environment import TaskEnvironment

    assert double.literal_defaults(TaskEnvironment, "get_demos") == double.literal_defaults(double.TaskEnvironment, "get_demos")


def test_launch_reset_and_frames_are_not_black(env):
    observation, info = env.reset(seed=1)
    assert observation["state"].shape == (22,) and observation["rgb_front"].shape == (64, 64, 3)
    assert observation["rgb_front"].max() > 0 and observation["rgb_wrist"].max() > 0, "all-black camera frames (check Xvfb/QT_QPA_PLATFORM)"
    again, info_again = env.reset(seed=1)
    np.testing.assert_allclose(info["scene"], info_again["scene"])


def test_one_step(env):
    observation, _ = env.reset(seed=2)
    hold = observation["proprio"].astype(np.float64).copy()
    hold[7] = 1.0
    _, reward, success, truncated, info = env.step(hold)
    assert isinstance(reward, float) and "success" in info
    unreachable = hold.copy()
    unreachable[:3] = [5.0, 5.0, 5.0]
    _, _, success, truncated, info = env.step(unreachable)
    assert not success and truncated and info["failure"] == "InvalidActionError"


def test_one_live_demo(env):
    suite = make_suite("rlbench", "rlbench10")
    episode = suite.record_demo(env, scene_seed=3, attempt=0)
    assert episode is not None and episode.length > 1 and episode.actions.shape[1] == 8
    assert episode.observations["rgb_front"].max() > 0


def test_tasks_switch_inside_the_one_simulator(envs):
    first = envs.get(SETTINGS)[1]
    other = envs.get(replace(SETTINGS, task="push_button"))[1]
    assert other is first and len(envs) == 1
    observation, info = other.reset(seed=5)
    assert observation["rgb_front"].max() > 0 and info["descriptions"]
    assert envs.get(SETTINGS)[1] is first


def test_one_evaluation_episode_replaying_a_live_demo(env):
    suite = make_suite("rlbench", "rlbench10")
    episode = suite.record_demo(env, scene_seed=4, attempt=0)
    assert episode is not None
    keyframe_actions = [a for i, a in enumerate(episode.actions) if i == 0 or not np.allclose(a, episode.actions[i - 1])]
    queue = list(keyframe_actions)
    outcome, _ = run_episode(env, lambda obs: queue.pop(0) if queue else keyframe_actions[-1], scene_seed=4)
    assert outcome.steps >= 1
    assert outcome.success or outcome.failure  # an unsolved episode says why it ended
