"""One episode: only finite rollouts count (a NaN action or observation is a failure of its own kind)."""

from __future__ import annotations

import numpy as np
import pytest

from rlmtl.envs import EnvSettings, TaskEnv, make_suite
from rlmtl.evaluation.rollout import NONFINITE_ACTION, NONFINITE_OBSERVATION, run_episode


class CredulousEnv(TaskEnv):
    """Reports success on any step, as Meta-World does for some tasks once NaN reaches MuJoCo;
    `nan_at` makes the observation of that step (0 = reset) NaN."""

    def __init__(self, nan_at: int | None = None) -> None:
        self.nan_at, self.t = nan_at, 0

    def _observation(self) -> dict[str, np.ndarray]:
        state = np.zeros(3, dtype=np.float32)
        if self.t == self.nan_at:
            state[1] = np.nan
        return {"state": state, "rgb_top": np.zeros((4, 4, 3), dtype=np.uint8)}

    def reset(self, seed=None, options=None):
        self.t = 0
        return self._observation(), {}

    def step(self, action):
        self.t += 1
        return self._observation(), 1.0, self.t >= 2, False, {"success": self.t >= 2}


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_nonfinite_action_ends_the_episode_before_the_simulator_sees_it(bad):
    env = CredulousEnv()
    outcome, _ = run_episode(env, lambda observation: np.array([0.0, bad], dtype=np.float32), scene_seed=1)
    assert not outcome.success and outcome.failure == NONFINITE_ACTION and outcome.steps == 0 and env.t == 0


@pytest.mark.parametrize("nan_at", [0, 1, 2])
def test_a_nonfinite_observation_is_never_a_success(nan_at):
    outcome, _ = run_episode(CredulousEnv(nan_at), lambda observation: np.zeros(2, dtype=np.float32), scene_seed=1)
    assert not outcome.success and outcome.failure == NONFINITE_OBSERVATION and outcome.steps == nan_at


def test_finite_rollouts_are_unchanged():
    outcome, _ = run_episode(CredulousEnv(), lambda observation: np.zeros(2, dtype=np.float32), scene_seed=1)
    assert outcome.success and outcome.failure == "" and outcome.steps == 2


@pytest.mark.parametrize("task", ["drawer-close-v3", "window-close-v3"])
def test_nan_actions_do_not_solve_metaworld_tasks(task):
    env = make_suite("metaworld", "mt10").make_env(EnvSettings("metaworld", "mt10", task))
    outcome, _ = run_episode(env, lambda observation: np.full(4, np.nan, dtype=np.float32), scene_seed=3)
    assert not outcome.success and outcome.failure == NONFINITE_ACTION


class FlakyEnv(CredulousEnv):
    """Solved at step 2 only (success is not sticky), and truncated at step `limit`."""

    def __init__(self, limit: int = 10) -> None:
        super().__init__()
        self.limit = limit

    def step(self, action):
        self.t += 1
        return self._observation(), 0.0, self.t == 2, self.t >= self.limit, {}


@pytest.mark.parametrize("after, steps", [(0, 2), (3, 5), (20, 10)])
def test_a_demo_goes_on_after_its_first_success_within_the_step_limit(after, steps):
    outcome, episode = run_episode(FlakyEnv(limit=10), lambda observation: np.zeros(2, dtype=np.float32), 1, record=True, steps_after_success=after)
    assert outcome.success and outcome.failure == "" and outcome.steps == steps
    assert episode is not None and len(episode.actions) == steps and episode.success.tolist() == [False, True] + [False] * (steps - 2)


def test_a_failure_after_the_success_fails_the_demo():
    outcome, _ = run_episode(CredulousEnv(nan_at=4), lambda observation: np.zeros(2, dtype=np.float32), 1, steps_after_success=5)
    assert not outcome.success and outcome.failure == NONFINITE_OBSERVATION and outcome.steps == 4
