"""RLBench observations and demos as rlmtl observations and dataset episodes (no RLBench import).

Observation keys (every task has the same shapes, so one agent serves all ten):

- `proprio` [8]: gripper pose (x, y, z metres; quaternion xyzw, canonical sign) and gripper_open.
- `state` [22]: `proprio`, then the 7 joint positions (rad) and 7 joint velocities (rad/s).
- `rgb_<camera>` [H, W, 3] uint8 for each configured camera (front, wrist, left_shoulder, ...).

The task's own low-dim state is left out: its size differs between tasks.

Training labels (see rlmtl/data/keyframes.py for the keyframe rule):

- `keyframe` mode: step t -> [gripper pose, gripper_open] at the next keyframe after t.
- `joint_velocity` mode: step t -> [joint velocities, gripper_open] at step t + 1, i.e. what the
  arm was commanded to do to get there.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from rlmtl.data.dataset import Episode
from rlmtl.data.keyframes import keyframe_indices, keyframe_targets, sample_steps
from rlmtl.envs.rlbench_actions import canonical_pose
from rlmtl.envs.rlbench_format import DemoData
from rlmtl.errors import DatasetError

PROPRIO_DIM = 8
STATE_DIM = 22
LOW_DIM_FIELDS = ("gripper_pose", "gripper_open", "joint_positions", "joint_velocities")


def low_dim(observation: Mapping[str, Any], source: str = "observation") -> dict[str, np.ndarray]:
    """The `proprio` and `state` vectors (float32) of one RLBench observation's attributes."""
    missing = [name for name in LOW_DIM_FIELDS if observation.get(name) is None]
    if missing:
        raise DatasetError(f"{source}: observation has no {', '.join(missing)} (enable them in the ObservationConfig)")
    pose = canonical_pose(np.asarray(observation["gripper_pose"], dtype=np.float64))
    proprio = np.concatenate([pose, [float(observation["gripper_open"])]])
    joints = np.asarray(observation["joint_positions"], dtype=np.float64).reshape(-1)
    velocities = np.asarray(observation["joint_velocities"], dtype=np.float64).reshape(-1)
    if joints.shape != (7,) or velocities.shape != (7,):
        raise DatasetError(f"{source}: expected 7 joint positions and velocities, got {joints.shape[0]} and {velocities.shape[0]}")
    state = np.concatenate([proprio, joints, velocities])
    return {"proprio": proprio.astype(np.float32), "state": state.astype(np.float32)}


def rlmtl_observation(observation: Mapping[str, Any], cameras: tuple[str, ...] | list[str]) -> dict[str, np.ndarray]:
    """One live RLBench observation (its `__dict__`) as rlmtl's observation dict."""
    result = low_dim(observation)
    for camera in cameras:
        image = observation.get(f"{camera}_rgb")
        if image is None:
            raise DatasetError(f"observation has no {camera}_rgb (is the camera enabled in the ObservationConfig?)")
        result[f"rgb_{camera}"] = np.ascontiguousarray(image, dtype=np.uint8)
    return result


def demo_episode(
    demo: DemoData,
    images: Mapping[str, np.ndarray],
    cameras: tuple[str, ...] | list[str],
    action_mode: str,
    samples: str = "all",
    scene_seed: int = 0,
    attempt: int = 0,
    source: str = "demo",
) -> Episode:
    """A demo as one rlmtl Episode of (observation, label) steps.

    `images` maps `<camera>_rgb` to [T, H, W, 3] uint8. `samples` ("all" or "keyframes") applies to
    the keyframe mode; the joint-velocity mode uses every step but the last.
    """
    length = len(demo)
    if length < 2:
        raise DatasetError(f"{source}: a demo needs at least 2 steps, got {length}")
    vectors = [low_dim(o, f"{source} step {i}") for i, o in enumerate(demo.observations)]
    proprio = np.stack([v["proprio"] for v in vectors])
    state = np.stack([v["state"] for v in vectors])
    if action_mode == "keyframe":
        velocities = state[:, 15:22]
        keyframes = keyframe_indices(proprio[:, 7], velocities)
        labels = keyframe_targets(proprio, keyframes)
        steps = sample_steps(keyframes, length, samples)
    elif action_mode == "joint_velocity":
        labels = np.concatenate([state[1:, 15:22], proprio[1:, 7:8]], axis=1)
        steps = np.arange(length - 1)
    else:
        raise ValueError(f"unknown RLBench action mode {action_mode!r}")
    observations = {"state": state[steps], "proprio": proprio[steps]}
    for camera in cameras:
        key = f"{camera}_rgb"
        if key not in images:
            raise DatasetError(f"{source}: no {key} images")
        if images[key].shape[0] != length:
            raise DatasetError(f"{source}: {key} has {images[key].shape[0]} frames but the demo has {length} steps")
        observations[f"rgb_{camera}"] = np.ascontiguousarray(images[key][steps], dtype=np.uint8)
    count = steps.shape[0]
    success = np.zeros(count, dtype=bool)
    success[-1] = True  # stored demos are successful; the task is solved after the last label
    rewards = success.astype(np.float32)
    return Episode(observations, labels[steps].astype(np.float32), rewards, success, scene_seed=scene_seed, attempt=attempt)


def live_images(demo: DemoData, cameras: tuple[str, ...] | list[str]) -> dict[str, np.ndarray]:
    """`<camera>_rgb` -> [T, H, W, 3] from a live demo's observation attributes."""
    images = {}
    for camera in cameras:
        frames = [o.get(f"{camera}_rgb") for o in demo.observations]
        if any(f is None for f in frames):
            raise DatasetError(f"live demo has steps without {camera}_rgb (is the camera enabled?)")
        images[f"{camera}_rgb"] = np.stack(frames).astype(np.uint8)
    return images
