"""Keyframe extraction (rlmtl/data/keyframes.py) and the demo -> episode conversion built on it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rlbench_fixtures import EXPECTED_KEYFRAMES, make_demo, trajectory

from rlmtl.data.keyframes import keyframe_indices, keyframe_targets, next_keyframe, sample_steps
from rlmtl.envs.rlbench_actions import canonical_quaternion
from rlmtl.envs.rlbench_convert import demo_episode
from rlmtl.envs.rlbench_format import demo_to_data


def test_synthetic_trajectory_keyframes():
    traj = trajectory()
    assert keyframe_indices(traj["gripper"], traj["velocities"]) == EXPECTED_KEYFRAMES == [4, 7, 15]


def test_a_long_pause_gives_one_keyframe_per_stop_buffer():
    velocities = np.full((20, 7), 0.5)
    velocities[3:15] = 0.0  # twelve steps at rest
    gripper = np.ones(20)
    assert keyframe_indices(gripper, velocities, stop_buffer=4) == [3, 8, 13, 19]
    assert keyframe_indices(gripper, velocities, stop_buffer=100) == [3, 19]
    # at rest everywhere: step 0 counts as stopped (it is never a keyframe) and starts the buffer
    assert keyframe_indices(gripper, velocities, stopping_delta=0.6) == [5, 10, 15, 19]
    assert keyframe_indices(gripper, velocities, stopping_delta=0.5) == [5, 10, 15, 19]  # |v| <= delta, as np.allclose


def test_rest_next_to_a_gripper_change_is_not_a_rest_keyframe_and_adjacent_final_is_dropped():
    velocities = np.full((10, 7), 0.5)
    velocities[4] = 0.0
    gripper = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0], dtype=float)  # changes at 5, right after the pause
    assert keyframe_indices(gripper, velocities) == [5, 9]
    velocities = np.full((10, 7), 0.5)
    velocities[8] = 0.0  # the arm stops one step before the end
    assert keyframe_indices(np.ones(10), velocities) == [9]


def test_peract_needs_the_gripper_unchanged_since_two_steps_before_a_rest():
    """The issue's first case: the gripper closes at 10 with the arm at rest over 9-11. PerAct's
    `_is_stopped` compares t - 2 with t - 1, so 11 is no rest keyframe (rlmtl used to give [10, 11, 19])."""
    velocities = np.full((20, 7), 0.5)
    velocities[9:12] = 0.0
    gripper = np.where(np.arange(20) < 10, 1.0, 0.0)
    assert keyframe_indices(gripper, velocities) == [10, 19]


def test_peract_step_zero_rest_suppresses_early_rest_keyframes():
    """The issue's second case: the arm at rest at steps 0-1. PerAct evaluates step 0 with t - 1 and
    t - 2 wrapping to the last steps; step 0 counts as stopped and starts the stop buffer, so step 1
    is no keyframe (rlmtl used to give [1, 19])."""
    velocities = np.full((20, 7), 0.5)
    velocities[0:2] = 0.0
    assert keyframe_indices(np.ones(20), velocities) == [19]
    velocities[2] = 0.0  # at rest over 0-2
    assert keyframe_indices(np.ones(20), velocities) == [19]
    gripper = np.ones(20)
    gripper[-1] = 0.0  # the last step differs: through the wrap-around steps 0 and 1 are not steady, 2 is a rest keyframe
    assert keyframe_indices(gripper, velocities) == [2, 19]


def test_short_and_malformed_inputs():
    assert keyframe_indices(np.ones(1), np.zeros((1, 7))) == [0]  # PerAct gives no keyframe; rlmtl keeps the only step
    assert keyframe_indices(np.ones(2), np.zeros((2, 7))) == [1]
    with pytest.raises(ValueError, match="joint_velocities must be"):
        keyframe_indices(np.ones(5), np.zeros((4, 7)))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.booleans(), min_size=3, max_size=40), st.integers(0, 2**31 - 1))
def test_every_gripper_change_is_a_keyframe(gripper_bits, seed):
    gripper = np.asarray(gripper_bits, dtype=float)
    velocities = np.random.default_rng(seed).uniform(-1, 1, (len(gripper), 7))
    keyframes = keyframe_indices(gripper, velocities)
    assert keyframes == sorted(set(keyframes)) and keyframes[-1] == len(gripper) - 1
    changes = [t for t in range(1, len(gripper) - 2) if gripper[t] != gripper[t - 1]]
    assert set(changes) <= set(keyframes)


def test_targets_point_at_the_next_keyframe():
    np.testing.assert_array_equal(next_keyframe([4, 7, 15], 16), [4, 4, 4, 4, 7, 7, 7, 15, 15, 15, 15, 15, 15, 15, 15, 15])
    actions = np.arange(16)[:, None] * np.ones((1, 2))
    np.testing.assert_array_equal(keyframe_targets(actions, [4, 7, 15])[:, 0], next_keyframe([4, 7, 15], 16))
    np.testing.assert_array_equal(sample_steps([4, 7, 15], 16, "keyframes"), [0, 4, 7])
    np.testing.assert_array_equal(sample_steps([4, 7, 15], 16, "all"), np.arange(15))


@pytest.mark.parametrize("samples", ["all", "keyframes"])
def test_demo_becomes_observation_next_keyframe_pairs(samples):
    demo = demo_to_data(make_demo(variation=0, seed=3))
    traj = trajectory()
    images = {"front_rgb": np.arange(16, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 3), np.uint8)}
    episode = demo_episode(demo, images, ["front"], "keyframe", samples)
    steps = np.arange(15) if samples == "all" else np.array([0, 4, 7])
    assert episode.length == len(steps) and episode.success[-1] and episode.success.sum() == 1
    for row, t in enumerate(steps):
        k = next(k for k in EXPECTED_KEYFRAMES if k > t)
        expected = np.concatenate([traj["pose"][k, :3], canonical_quaternion(traj["pose"][k, 3:]), [traj["gripper"][k]]])
        np.testing.assert_allclose(episode.actions[row], expected, atol=1e-6)
        assert episode.actions[row, 6] >= 0  # canonical sign
        assert episode.observations["rgb_front"][row, 0, 0, 0] == t
        np.testing.assert_allclose(episode.observations["state"][row, 8:15], traj["joints"][t], atol=1e-6)
    assert episode.observations["state"].shape[1] == 22 and episode.observations["proprio"].shape[1] == 8


def test_joint_velocity_labels_are_the_next_steps_velocities():
    demo = demo_to_data(make_demo(variation=0, seed=3))
    traj = trajectory()
    episode = demo_episode(demo, {}, [], "joint_velocity")
    assert episode.length == 15
    np.testing.assert_allclose(episode.actions[:, :7], traj["velocities"][1:], atol=1e-6)
    np.testing.assert_allclose(episode.actions[:, 7], traj["gripper"][1:])
