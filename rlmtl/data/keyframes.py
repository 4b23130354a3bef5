"""Keyframes of a demonstration: the poses a next-best-pose agent must reach, in order.

The rule (the one ARM, PerAct and RVT train with; PerAct `helpers/demo_loading_utils.py::keypoint_discovery`). Step t
(0 < t < T - 1) of a demo of T steps is a keyframe when

1. the gripper changes state: `gripper_open[t] != gripper_open[t - 1]` (a grasp or a release), or
2. the arm comes to rest: every |joint velocity| at t is below `stopping_delta` (rad/s), the
   gripper state is the same at t - 1, t and t + 1, and at least `stop_buffer` steps have passed
   since the previous rest keyframe (one long pause gives one keyframe, not many).

The last step T - 1 is always a keyframe. When the last two keyframes are adjacent steps, the
penultimate one is dropped (the arm decelerating into the final pose is not a separate goal).

`keyframe_targets` then pairs every step t with the action of the first keyframe after it: the
gripper pose and gripper state that the agent must command next.
"""

from __future__ import annotations

import numpy as np

STOPPING_DELTA = 0.1
STOP_BUFFER = 4


def keyframe_indices(
    gripper_open: np.ndarray,
    joint_velocities: np.ndarray,
    stopping_delta: float = STOPPING_DELTA,
    stop_buffer: int = STOP_BUFFER,
) -> list[int]:
    """Keyframe steps of one demo.

    Args:
        gripper_open: [T] gripper state per step (1 open, 0 closed).
        joint_velocities: [T, J] arm joint velocities per step (rad/s).

    Returns:
        Sorted step indices in [1, T - 1]; always ends with T - 1.
    """
    gripper = np.asarray(gripper_open, dtype=np.float64).reshape(-1)
    velocities = np.asarray(joint_velocities, dtype=np.float64)
    length = gripper.shape[0]
    if length == 0:
        raise ValueError("a demo needs at least one step")
    if velocities.ndim != 2 or velocities.shape[0] != length:
        raise ValueError(f"joint_velocities must be [T={length}, J], got shape {velocities.shape}")
    keyframes: list[int] = []
    last_rest = -stop_buffer - 1
    for t in range(1, length - 1):
        changed = gripper[t] != gripper[t - 1]
        steady = gripper[t - 1] == gripper[t] == gripper[t + 1]
        resting = steady and bool(np.all(np.abs(velocities[t]) < stopping_delta)) and t - last_rest > stop_buffer
        if changed or resting:
            keyframes.append(t)
        if resting:
            last_rest = t
    keyframes.append(length - 1)
    if len(keyframes) >= 2 and keyframes[-2] == keyframes[-1] - 1:
        keyframes.pop(-2)
    return keyframes


def next_keyframe(keyframes: list[int], length: int) -> np.ndarray:
    """[T] index of the first keyframe strictly after each step (the last step maps to itself)."""
    targets = np.empty(length, dtype=np.int64)
    position = 0
    for t in range(length):
        while position < len(keyframes) - 1 and keyframes[position] <= t:
            position += 1
        targets[t] = keyframes[position]
    return targets


def keyframe_targets(actions_at_step: np.ndarray, keyframes: list[int]) -> np.ndarray:
    """[T, A] the action each step must command: `actions_at_step` at its next keyframe."""
    actions_at_step = np.asarray(actions_at_step)
    return actions_at_step[next_keyframe(keyframes, actions_at_step.shape[0])]


def sample_steps(keyframes: list[int], length: int, samples: str) -> np.ndarray:
    """Which steps become training samples: "all" steps before the last keyframe, or "keyframes"
    (step 0 and every keyframe but the last, the states a keyframe agent acts from)."""
    if samples == "all":
        return np.arange(max(length - 1, 1))
    if samples == "keyframes":
        return np.asarray([0, *[k for k in keyframes[:-1] if k != 0]], dtype=np.int64)
    raise ValueError(f"samples must be 'all' or 'keyframes', got {samples!r}")
