"""Fixture builders: RLBench dataset folders written in RLBench's exact on-disk format, without RLBench.

`low_dim_obs.pkl` is a pickled `rlbench.demo.Demo` of `rlbench.backend.observation.Observation`s.
Stand-in classes with those module and class names are registered in `sys.modules` only while a
pickle is written, so the bytes name the same globals RLBench's generator writes. numpy arrays are
written either with the running numpy's names (numpy 2: `numpy._core.multiarray`) or, with
`numpy_layout=1`, under numpy 1's names (`numpy.core.multiarray`), as a Python 3.8 RLBench env does.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import sys
import types
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

from rlmtl.envs.rlbench_format import CAMERAS, encode_depth

NEAR, FAR = 0.01, 4.5


class Demo:
    """Same attributes as rlbench.demo.Demo."""

    def __init__(self, observations: list, random_seed: Any = None, num_reset_attempts: Any = None) -> None:
        self._observations = observations
        self.random_seed = random_seed
        self.num_reset_attempts = num_reset_attempts

    def __len__(self) -> int:
        return len(self._observations)

    def __getitem__(self, i: int) -> Any:
        return self._observations[i]


class Observation:
    """Same attributes as rlbench.backend.observation.Observation (set by keyword)."""

    def __init__(self, **attributes: Any) -> None:
        self.__dict__.update(attributes)


Demo.__module__, Demo.__qualname__ = "rlbench.demo", "Demo"
Observation.__module__, Observation.__qualname__ = "rlbench.backend.observation", "Observation"


def _np1_function(name: str, target: Any) -> Any:
    def function(*args: Any) -> Any:
        return target(*args)

    function.__module__, function.__qualname__, function.__name__ = "numpy.core.multiarray", name, name
    return function


def _numpy_multiarray() -> Any:
    try:
        from numpy._core import multiarray
    except ImportError:
        from numpy.core import multiarray
    return multiarray


_NP1_RECONSTRUCT = _np1_function("_reconstruct", _numpy_multiarray()._reconstruct)
_NP1_SCALAR = _np1_function("scalar", _numpy_multiarray().scalar)


@contextlib.contextmanager
def _registered(modules: dict[str, types.ModuleType]) -> Iterator[None]:
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _module(name: str, **members: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(members)
    return module


class _Numpy1Pickler(pickle.Pickler):
    """Writes arrays and numpy scalars with numpy 1's module names."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is np.ndarray:
            _, args, state = obj.__reduce__()
            return _NP1_RECONSTRUCT, args, state
        if isinstance(obj, np.generic):
            _, args = obj.__reduce__()
            return _NP1_SCALAR, args
        return NotImplemented


def rlbench_pickle(value: Any, protocol: int = 4, numpy_layout: int = 2) -> bytes:
    """`pickle.dumps(value)` as RLBench's generator writes it (Demo/Observation under RLBench's names)."""
    modules = {
        "rlbench": _module("rlbench"),
        "rlbench.demo": _module("rlbench.demo", Demo=Demo),
        "rlbench.backend": _module("rlbench.backend"),
        "rlbench.backend.observation": _module("rlbench.backend.observation", Observation=Observation),
    }
    if numpy_layout == 1:
        modules["numpy.core.multiarray"] = _module("numpy.core.multiarray", _reconstruct=_NP1_RECONSTRUCT, scalar=_NP1_SCALAR)
    buffer = io.BytesIO()
    with _registered(modules):
        pickler = _Numpy1Pickler(buffer, protocol) if numpy_layout == 1 else pickle.Pickler(buffer, protocol)
        pickler.dump(value)
    return buffer.getvalue()


EXPECTED_KEYFRAMES = [4, 7, 15]


# ----------------------------------------------------------------------------- a synthetic demo


def trajectory(length: int = 16) -> dict[str, np.ndarray]:
    """A pick-like demo: move (steps 0-3), rest (4-5), close the gripper (7), move (8-14), end (15).

    Keyframes by PerAct's rule: 4 (the arm at rest; 5 is inside the stop buffer), 7 (the gripper
    closes), 15 (last)."""
    assert length == 16
    t = np.arange(length)
    speed = np.where((t >= 4) & (t <= 5), 0.0, 0.5)
    speed[-1] = 0.0
    velocities = np.repeat(speed[:, None], 7, axis=1) * np.linspace(1.0, 0.4, 7)
    gripper = np.where(t >= 7, 0.0, 1.0)
    x = np.cumsum(speed) * 0.02 + 0.1
    angle = t * 0.05
    # a quaternion with negative w on some steps, to check sign canonicalisation
    quat = np.stack([np.zeros(length), np.sin(angle / 2 + 1.8), np.zeros(length), np.cos(angle / 2 + 1.8)], axis=1)
    pose = np.concatenate([np.stack([x, 0.2 + 0 * x, 0.9 + 0.01 * t], axis=1), quat], axis=1)
    joints = np.cumsum(velocities, axis=0) * 0.05
    return {"velocities": velocities, "gripper": gripper, "pose": pose, "joints": joints}


def make_demo(variation: int, seed: int, length: int = 16, peract: bool = False) -> Demo:
    """A Demo whose observations carry every attribute RLBench stores (images None)."""
    traj = trajectory(length)
    observations = []
    for i in range(length):
        misc: dict[str, Any] = {"variation_index": variation}
        for camera in CAMERAS:
            misc[f"{camera}_camera_near"] = np.float64(NEAR)
            misc[f"{camera}_camera_far"] = np.float64(FAR)
            misc[f"{camera}_camera_extrinsics"] = np.eye(4)
            misc[f"{camera}_camera_intrinsics"] = np.eye(3)
        misc["joint_poses"] = [traj["pose"][i].copy() for _ in range(7)]
        attributes = {f"{camera}_{kind}": None for camera in CAMERAS for kind in ("rgb", "depth", "mask", "point_cloud")}
        attributes.update(
            joint_velocities=traj["velocities"][i].copy(),
            joint_positions=traj["joints"][i].copy(),
            joint_forces=np.full(7, 0.1 * i),
            gripper_open=float(traj["gripper"][i]),
            gripper_pose=traj["pose"][i].copy(),
            gripper_matrix=np.eye(4),
            gripper_joint_positions=np.array([0.04, 0.04]) * traj["gripper"][i],
            gripper_touch_forces=np.zeros(6),
            task_low_dim_state=np.array([0.3, 0.1, 0.8 + variation]),
            misc=misc,
        )
        if peract:
            attributes["ignore_collisions"] = np.array([1.0])
        observations.append(Observation(**attributes))
    state = np.random.RandomState(seed).get_state()
    return Demo(observations, random_seed=state, num_reset_attempts=1)


def frame(camera: str, step: int, episode: int, size: int) -> np.ndarray:
    """The RGB frame a fixture stores: distinct for every (camera, step, episode)."""
    base = (CAMERAS.index(camera) * 40 + step * 7 + episode * 3) % 256
    image = np.full((size, size, 3), base, dtype=np.uint8)
    image[0, 0] = (step, episode, CAMERAS.index(camera))
    return image


def depth_frame(step: int, size: int) -> np.ndarray:
    """Normalised depth of a fixture frame."""
    return np.linspace(0.0, 1.0, size * size).reshape(size, size) * (0.5 + 0.02 * step)


def write_episode(folder: Path, demo: Demo, episode: int, cameras: tuple[str, ...], size: int, numpy_layout: int, protocol: int) -> None:
    """One episode folder as save_demo writes it (PNGs for `cameras`, then the pickle)."""
    folder.mkdir(parents=True)
    for camera in cameras:
        for kind in ("rgb", "depth", "mask"):
            (folder / f"{camera}_{kind}").mkdir()
        for i in range(len(demo)):
            Image.fromarray(frame(camera, i, episode, size)).save(folder / f"{camera}_rgb" / f"{i}.png")
            Image.fromarray(encode_depth(depth_frame(i, size)), mode="RGB").save(folder / f"{camera}_depth" / f"{i}.png")
            mask = np.zeros((size, size, 3), dtype=np.uint8)
            mask[..., 0] = 80 + i
            Image.fromarray(mask).save(folder / f"{camera}_mask" / f"{i}.png")
    (folder / "low_dim_obs.pkl").write_bytes(rlbench_pickle(demo, protocol, numpy_layout))


def write_rlbench_dataset(
    root: Path,
    task: str,
    layout: str,
    episodes_per_variation: dict[int, int],
    cameras: tuple[str, ...] = ("front", "wrist"),
    size: int = 16,
    numpy_layout: int = 2,
    protocol: int = 4,
) -> None:
    """A task folder in the `upstream` (variation<V>/episodes) or `peract` (all_variations) layout."""
    number = 0
    for variation, count in episodes_per_variation.items():
        descriptions = pickle.dumps([f"do variation {variation}", f"variation {variation} please"])
        for m in range(count):
            demo = make_demo(variation, seed=100 * variation + m, peract=layout == "peract")
            if layout == "upstream":
                base = root / task / f"variation{variation}"
                folder = base / "episodes" / f"episode{m}"
                write_episode(folder, demo, m, cameras, size, numpy_layout, protocol)
                (base / "variation_descriptions.pkl").write_bytes(descriptions)
            else:
                folder = root / task / "all_variations" / "episodes" / f"episode{number}"
                write_episode(folder, demo, number, cameras, size, numpy_layout, protocol)
                (folder / "variation_descriptions.pkl").write_bytes(descriptions)
                (folder / "variation_number.pkl").write_bytes(pickle.dumps(variation))
                number += 1
