"""The embedded default backend: Meta-World MT10 and MT50 (metaworld 3.x on MuJoCo), headless.

Observations: `state` (39-d: hand xyz, gripper opening, object poses, the previous frame's
18 values, goal xyz), `proprio` (hand xyz + gripper opening, the first 4 values of `state`),
and `rgb_<camera>` (HxWx3 uint8) for each configured camera. Actions: 4-d in [-1, 1]
(xyz mocap delta, gripper effort). Success is `info["success"]` of Meta-World.

Scenes: metaworld ignores `reset(seed=...)` and draws goals from the global numpy RNG, so this
backend seeds the env's own generator (`env.seed`, `seeded_rand_vec`) and then freezes the drawn
goal vector (`_last_rand_vec`), which makes every seed one reproducible scene.

Rendering uses MuJoCo's offscreen `Renderer` with shadows, reflections and MSAA off (about 15x
faster on a CPU renderer) and needs `MUJOCO_GL=egl` or `osmesa`, set here before MuJoCo loads.
The `corner*` cameras render upside down in Meta-World and are flipped. `env.options.camera_fovy`
narrows the observation cameras' vertical field of view (MuJoCo's `cam_fovy`, in degrees), so the
workspace fills more of a small image: at 64x64 from Meta-World's own views, the goal markers of
reach, push and pick-place are one or two pixels.
"""

from __future__ import annotations

import copy
import functools
import math
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlmtl.envs.base import BACKENDS, ArraySpec, Backend, EnvSettings, Expert, Observation, Suite, TaskEnv

# The scripted policies warn on every step that their gains exceed the action range; the expert
# below clips exactly as the env does, so the warning carries no information.
warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high")
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

MT10_TASKS = [
    "reach-v3",
    "push-v3",
    "pick-place-v3",
    "door-open-v3",
    "drawer-open-v3",
    "drawer-close-v3",
    "button-press-topdown-v3",
    "peg-insert-side-v3",
    "window-open-v3",
    "window-close-v3",
]
CAMERAS = ["topview", "corner", "corner2", "corner3", "corner4", "behindGripper", "gripperPOV"]
FLIPPED_CAMERAS = {"corner", "corner2", "corner3", "corner4"}
STATE_DIM = 39
PROPRIO_DIM = 4
ACTION_DIM = 4
HORIZON = 500


@dataclass(frozen=True)
class MetaWorldOptions:
    """The Meta-World backend's options (`env.options` of a config); checked on construction."""

    camera_fovy: float = field(
        default=0.0,
        metadata={
            "help": "vertical field of view in degrees of every observation camera (MuJoCo cam_fovy; 0 = Meta-World's own, "
            "45 for corner, 60 for corner2); a video from an observation camera shows the same view",
            # only a set value names a dataset, so the datasets cached before this option keep their names
            "fingerprint_when_set": True,
        },
    )

    def __post_init__(self) -> None:
        fovy = self.camera_fovy
        if isinstance(fovy, bool) or not isinstance(fovy, (int, float)) or not math.isfinite(fovy) or not (fovy == 0 or 0 < fovy < 180):
            raise ValueError(f"camera_fovy: {fovy!r} must be 0 (Meta-World's own) or an angle in degrees strictly between 0 and 180")


_COMPILED: dict[str, Any] = {}  # this process's compiled MuJoCo models, by XML path


def _copied_simulation(env: Any) -> tuple[Any, Any]:
    """`MujocoEnv._initialize_simulation` (gymnasium's, which compiles the env's XML) with the XML
    compiled once per process: a task's next env gets a copy of the compiled model (`copy.copy`,
    MuJoCo's `mj_copyModel`: about 15 ms against 140 ms to compile here, and the same trajectories).
    Every env owns its copy, so settings changed on one env's model stay with it."""
    import mujoco

    compiled = _COMPILED.get(env.fullpath)
    if compiled is None:
        compiled = _COMPILED[env.fullpath] = mujoco.MjModel.from_xml_path(env.fullpath)
    model = copy.copy(compiled)
    model.vis.global_.offwidth = max(model.vis.global_.offwidth, env.width)
    model.vis.global_.offheight = max(model.vis.global_.offheight, env.height)
    return model, mujoco.MjData(model)


@functools.cache
def _env_class(task: str) -> type:
    """Meta-World's env class of `task`, with its model compiled once per process (`_copied_simulation`)."""
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    base = ALL_V3_ENVIRONMENTS[task]
    return type(base.__name__, (base,), {"_initialize_simulation": _copied_simulation, "__module__": __name__})


class MetaWorldTaskEnv(TaskEnv):
    """One Meta-World task with seeded scenes, dict observations and offscreen cameras."""

    def __init__(self, settings: EnvSettings) -> None:
        import gymnasium as gym

        self.settings = settings
        self.max_episode_steps = min(settings.max_episode_steps or HORIZON, HORIZON)
        self._env = _env_class(settings.task)()
        # MT benchmarks show the goal (partially_observable=False); the cached observation space
        # must be dropped for that to take effect.
        self._env._partially_observable = False
        self._env.__dict__.pop("sawyer_observation_space", None)
        self._env._set_task_called = True
        self._renderers: dict[int, Any] = {}
        if settings.cameras or settings.video_size:
            model = self._env.model
            model.light_castshadow[:] = 0
            model.mat_reflectance[:] = 0
            model.vis.quality.offsamples = 0
            if settings.options.camera_fovy:  # on this env's own copy of the model (`_copied_simulation`)
                for camera in settings.cameras:
                    model.camera(camera).fovy = settings.options.camera_fovy
        spaces: dict[str, gym.Space] = {
            "state": gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32),
            "proprio": gym.spaces.Box(-np.inf, np.inf, (PROPRIO_DIM,), np.float32),
        }
        for camera in settings.cameras:
            size = settings.image_size
            spaces[f"rgb_{camera}"] = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
        self._steps = 0

    # -- rendering
    def _render_camera(self, camera: str, size: int) -> np.ndarray:
        import mujoco

        renderer = self._renderers.get(size)
        if renderer is None:
            renderer = mujoco.Renderer(self._env.model, size, size)
            self._renderers[size] = renderer
        renderer.update_scene(self._env.data, camera=camera)
        frame = renderer.render()
        if camera in FLIPPED_CAMERAS:
            frame = frame[::-1]
        return np.ascontiguousarray(frame)

    def _observation(self, state: np.ndarray) -> Observation:
        state = state.astype(np.float32)
        observation: Observation = {"state": state, "proprio": state[:PROPRIO_DIM].copy()}
        for camera in self.settings.cameras:
            observation[f"rgb_{camera}"] = self._render_camera(camera, self.settings.image_size)
        return observation

    def render(self) -> np.ndarray:
        camera = self.settings.video_camera or "corner"
        return self._render_camera(camera, self.settings.video_size or 128)

    # -- gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is None:
            raise ValueError("MetaWorldTaskEnv.reset needs seed=<scene seed>; scenes are always seeded")
        env = self._env
        env._freeze_rand_vec = False
        env.seeded_rand_vec = True
        env.seed(int(seed))
        state, info = env.reset()
        env._freeze_rand_vec = True  # a later reset without a new seed replays this scene
        self._steps = 0
        info = {"scene": np.asarray(env._last_rand_vec, dtype=np.float64).copy(), "success": False}
        return self._observation(state), info

    def step(self, action: np.ndarray):
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        state, reward, _, _, info = self._env.step(action)
        self._steps += 1
        success = bool(info.get("success", 0.0) >= 1.0)
        truncated = self._steps >= self.max_episode_steps
        return self._observation(state), float(reward), success, truncated, {"success": success}

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()
        self._env.close()


class MetaWorldSuite(Suite):
    """A Meta-World multi-task suite: MT10 or MT50 (the tasks of `metaworld.env_dict.MT10_V3` /
    `MT50_V3`, in their order)."""

    backend = "metaworld"
    steps_per_second = 80  # metaworld/sawyer_xyz_env.py: render_fps 80 (5 MuJoCo steps of 2.5 ms per env step)

    def __init__(self, name: str, task_names: list[str]) -> None:
        self.name = name
        self.task_names = list(task_names)
        self.max_episode_steps = HORIZON
        self.default_camera = "corner"
        self.cameras = list(CAMERAS)

    def observation_spec(self, cameras: list[str], image_size: int) -> dict[str, ArraySpec]:
        unknown = [c for c in cameras if c not in CAMERAS]
        if unknown:
            raise KeyError(f"unknown Meta-World camera(s) {unknown} (cameras: {', '.join(CAMERAS)})")
        spec = {
            "state": ArraySpec((STATE_DIM,), "float32"),
            "proprio": ArraySpec((PROPRIO_DIM,), "float32"),
        }
        for camera in cameras:
            spec[f"rgb_{camera}"] = ArraySpec((image_size, image_size, 3), "uint8", 0, 255)
        return spec

    def action_spec(self) -> ArraySpec:
        return ArraySpec((ACTION_DIM,), "float32", -1.0, 1.0)

    def make_env(self, settings: EnvSettings) -> TaskEnv:
        self.task_index(settings.task)
        self.observation_spec(list(settings.cameras), settings.image_size)
        return MetaWorldTaskEnv(settings)

    def video_fps(self, task: str, options: Any) -> float:
        """The `render_fps` of the task's Meta-World env: 80, one step every 12.5 ms (5 MuJoCo steps of 2.5 ms)."""
        self.task_index(task)
        return float(_env_class(task).metadata["render_fps"])

    def make_expert(self, task: str) -> Expert:
        from metaworld.policies import ENV_POLICY_MAP

        self.task_index(task)
        policy = ENV_POLICY_MAP[task]()

        def expert(observation: Observation) -> np.ndarray:
            # The scripted policies emit actions outside [-1, 1] on most steps; the env clips them,
            # so the stored BC target is the clipped action the env really applied.
            action = policy.get_action(observation["state"].astype(np.float64))
            return np.clip(action, -1.0, 1.0).astype(np.float32)

        return expert


@BACKENDS.register("metaworld")
class MetaWorldBackend(Backend):
    """MuJoCo + metaworld 3.x; pip-installable and headless."""

    name = "metaworld"
    suite_names = ["mt10", "mt50"]
    options_class = MetaWorldOptions

    def make_suite(self, suite: str) -> Suite:
        if suite == "mt10":
            return MetaWorldSuite("mt10", MT10_TASKS)
        if suite == "mt50":
            from metaworld.env_dict import MT50_V3

            return MetaWorldSuite("mt50", list(MT50_V3))  # all 50 v3 tasks, every one with a scripted expert
        raise KeyError(f"unknown suite {suite!r} of backend 'metaworld' (suites: {', '.join(self.suite_names)})")
