"""Keyframes of a demonstration: the poses a next-best-pose agent must reach, in order.

The rule is PerAct's `keypoint_discovery` with its `_is_stopped` (peract/peract 02fb876,
`helpers/demo_loading_utils.py`:8-44), which ARM and RVT use too. For a demo of T steps, walking t = 0 .. T - 1:

1. t is *stopped* when no rest keyframe was marked in the last `stop_buffer` steps, every |joint
   velocity| at t is at most `stopping_delta` (`np.allclose(v, 0, atol=0.1)`: <=, not <), t < T - 2,
   and the gripper state is the same at t - 2, t - 1, t and t + 1;
2. t > 0 is a keyframe when the gripper state changes (`gripper_open[t] != gripper_open[t - 1]`),
   when t is stopped, or at the last step T - 1;
3. when the last two keyframes are adjacent steps, the penultimate one is dropped.

Step 0: PerAct evaluates rule 1 at t = 0 as well, reading t - 1 and t - 2 with Python's negative
indices, i.e. the demo's last two steps. Step 0 is never a keyframe, but when it counts as stopped
(at rest, and the gripper state of steps 0, 1, T - 1 and T - 2 equal) it starts the stop buffer,
so the arm resting over steps 1..4 gives no keyframe there: an arm at rest at steps 0-1 of a
20-step demo gives [19], not [1, 19]. Likewise at t = 1, t - 2 is the last step. `keyframe_indices`
reproduces this exactly, wrap-around included, so that datasets match PerAct's and RVT's labels.

`keyframe_targets` then pairs every step t with the action of the first keyframe after it: the
gripper pose and gripper state that the agent must command next.
"""

from __future__ import annotations

import numpy as np

STOPPING_DELTA = 0.1  # PerAct keypoint_discovery(stopping_delta=0.1)
STOP_BUFFER = 4  # PerAct: `stopped_buffer = 4 if stopped else stopped_buffer - 1`


def keyframe_indices(
    gripper_open: np.ndarray,
    joint_velocities: np.ndarray,
    stopping_delta: float = STOPPING_DELTA,
    stop_buffer: int = STOP_BUFFER,
) -> list[int]:
    """Keyframe steps of one demo, by PerAct's rule (module docstring).

    Args:
        gripper_open: [T] gripper state per step (1 open, 0 closed).
        joint_velocities: [T, J] arm joint velocities per step (rad/s).

    Returns:
        Sorted step indices in [1, T - 1]; ends with T - 1 (a one-step demo gives [0]).
    """
    gripper = np.asarray(gripper_open, dtype=np.float64).reshape(-1)
    velocities = np.asarray(joint_velocities, dtype=np.float64)
    length = gripper.shape[0]
    if length == 0:
        raise ValueError("a demo needs at least one step")
    if velocities.ndim != 2 or velocities.shape[0] != length:
        raise ValueError(f"joint_velocities must be [T={length}, J], got shape {velocities.shape}")
    if length == 1:
        return [0]
    at_rest = np.all(np.abs(velocities) <= stopping_delta, axis=1)
    keyframes: list[int] = []
    buffer = 0
    for t in range(length):
        steady = (
            t < length - 2
            and gripper[t] == gripper[t + 1]
            and gripper[t] == gripper[t - 1]  # t - 1 = -1 (the last step) at t = 0, as in PerAct
            and gripper[t - 2] == gripper[t - 1]
        )
        stopped = buffer <= 0 and bool(at_rest[t]) and steady
        buffer = stop_buffer if stopped else buffer - 1
        if t != 0 and (gripper[t] != gripper[t - 1] or t == length - 1 or stopped):
            keyframes.append(t)
    if len(keyframes) > 1 and keyframes[-1] - 1 == keyframes[-2]:
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
