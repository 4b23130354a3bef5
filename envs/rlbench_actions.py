"""rlmtl's two RLBench action spaces, and the conversion of a policy's output into an RLBench action.

Both are 8-d (RLBench `rlbench/action_modes/arm_action_modes.py`, `gripper_action_modes.py`):

- `keyframe` (default): `[x, y, z, qx, qy, qz, qw, gripper_open]`, the next gripper pose in the
  world frame (metres, quaternion xyzw as RLBench's `gripper_pose`), reached with
  `EndEffectorPoseViaPlanning` + `Discrete` gripper (ARM, PerAct, RVT, Hiveformer).
- `joint_velocity`: `[7 joint velocities (rad/s), gripper_open]` per simulation step, with
  `JointVelocity` + `Discrete` (RLBench's own imitation-learning example and dataset generator).

A predicted quaternion is normalised and sign-canonicalised (q and -q are the same rotation; the
stored labels use qw >= 0, RVT's convention), because RLBench raises InvalidActionError on a
non-unit quaternion. The gripper value is thresholded at 0.5 exactly as `Discrete` does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ACTION_MODES = ("keyframe", "joint_velocity")
ACTION_DIM = 8


def canonical_quaternion(quaternion: np.ndarray) -> np.ndarray:
    """Unit quaternion (xyzw) with qw >= 0 (for qw == 0 the first non-zero component is positive)."""
    q = np.asarray(quaternion, dtype=np.float64).reshape(4)
    norm = float(np.linalg.norm(q))
    if not np.isfinite(norm) or norm < 1e-8:
        raise ValueError(f"quaternion {q.tolist()} has no direction (norm {norm:.3g})")
    q = q / norm
    sign_source = q[3] if q[3] != 0 else q[np.flatnonzero(q)[0]]
    return -q if sign_source < 0 else q


def canonical_pose(pose: np.ndarray) -> np.ndarray:
    """A 7-d pose (xyz + quaternion xyzw) with its quaternion canonicalised."""
    pose = np.asarray(pose, dtype=np.float64).reshape(7)
    return np.concatenate([pose[:3], canonical_quaternion(pose[3:])])


def gripper_command(value: float) -> float:
    """1.0 (open) when value > 0.5, else 0.0 (closed): RLBench's Discrete rule."""
    return 1.0 if float(value) > 0.5 else 0.0


def to_rlbench_action(action: np.ndarray, mode: str) -> np.ndarray:
    """The 8-d float64 action RLBench's `TaskEnvironment.step` receives for `mode`."""
    action = np.asarray(action, dtype=np.float64).reshape(-1)
    if action.shape[0] != ACTION_DIM:
        raise ValueError(f"RLBench {mode} actions are {ACTION_DIM}-d, got {action.shape[0]}")
    if not np.all(np.isfinite(action)):
        raise ValueError(f"action has non-finite values: {action.tolist()}")
    if mode == "keyframe":
        return np.concatenate([canonical_pose(action[:7]), [gripper_command(action[7])]])
    if mode == "joint_velocity":
        return np.concatenate([action[:7], [gripper_command(action[7])]])
    raise ValueError(f"unknown RLBench action mode {mode!r} (modes: {', '.join(ACTION_MODES)})")


def make_action_mode(api: Any, mode: str) -> Any:
    """RLBench's ActionMode object for `mode` (`api` holds the RLBench classes, see rlbench_backend)."""
    if mode == "keyframe":
        arm = api.EndEffectorPoseViaPlanning()
    elif mode == "joint_velocity":
        arm = api.JointVelocity()
    else:
        raise ValueError(f"unknown RLBench action mode {mode!r} (modes: {', '.join(ACTION_MODES)})")
    return api.MoveArmThenGripper(arm_action_mode=arm, gripper_action_mode=api.Discrete())
