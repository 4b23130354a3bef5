"""The RLBench backend: suite `rlbench10`, the 10 tasks of the Auto-Lambda paper, in CoppeliaSim.

`rlbench` and `pyrep` are imported only when an environment is made (`load_api`), so listing the
suite, importing datasets and training need neither; without them the backend says in one line
what to install. Run it inside the image of docker/rlbench.Dockerfile (CoppeliaSim 4.1.0, PyRep,
RLBench, Xvfb).

Options (`RLBenchOptions`: `env.options` of a config, `EnvSettings.options` of an env):
`action_mode` (`keyframe`: EndEffectorPoseViaPlanning + Discrete; `joint_velocity`: JointVelocity +
Discrete; see envs/rlbench_actions.py), `variation` (the task variation; -1 draws one per episode
from the scene seed) and `render_mode` (`opengl` or `opengl3`; data and evaluation must use the same).

Episodes: `reset(seed=s)` seeds numpy's global generator, which RLBench draws the scene from, so a
seed rebuilds the same scene; a scene RLBench cannot build (its TaskEnvironmentError) is a
`SceneResetError`, which the pool retries and then counts as an error. Success is reward >= 1.
RLBench's InvalidActionError (a wrong action shape, a non-unit quaternion, a target outside the
workspace, or no path: both end-effector arm modes turn PyRep's ConfigurationPathError and IKError
into it) ends the episode as a failure, reported as `info["failure"] = "InvalidActionError"`.

One simulator per process: each PyRep instance needs its own process (PyRep README.md:185-187),
so the suite declares `simulators_per_process = 1` and an env switches tasks in place
(`switch_task`: RLBench's `Environment.get_task` unloads the previous task, environment.py:141-151).
The simulator is shut down on `close()`, and by a finalizer if the env is dropped without it.
"""

from __future__ import annotations

import dataclasses
import random
import weakref
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

from rlmtl.envs.base import BACKENDS, ArraySpec, Backend, EnvSettings, SceneResetError, Suite, TaskEnv
from rlmtl.envs.rlbench_actions import ACTION_DIM, ACTION_MODES, make_action_mode, to_rlbench_action
from rlmtl.envs.rlbench_convert import PROPRIO_DIM, STATE_DIM, demo_episode, live_images, rlmtl_observation
from rlmtl.envs.rlbench_format import CAMERAS, demo_to_data
from rlmtl.errors import RlmtlError

RLBENCH10_TASKS = [
    "pick_and_lift",
    "pick_up_cup",
    "push_button",
    "put_knife_on_chopping_board",
    "put_money_in_safe",
    "reach_target",
    "slide_block_to_target",
    "stack_wine",
    "take_money_out_safe",
    "take_umbrella_out_of_umbrella_stand",
]
KEYFRAME_HORIZON = 25  # next-best-pose steps per episode (PerAct's evaluation length)
JOINT_VELOCITY_FPS = 20.0  # steps per simulated second with joint velocities (see RLBenchSuite.video_fps)
KEYFRAME_VIDEO_FPS = 2.0  # video frames per second of keyframe episodes, a viewing rate
JOINT_VELOCITY_HORIZON = 200
RENDER_MODES = ("opengl", "opengl3")
INSTALL_MESSAGE = (
    "the rlbench backend needs CoppeliaSim 4.1.0, PyRep and RLBench (not on PyPI): build and use the image of "
    "docker/rlbench.Dockerfile, or unpack CoppeliaSim and run COPPELIASIM_ROOT=<its folder> bash scripts/install_rlbench.sh "
    "(README section 'RLBench')"
)
# the exceptions of `TaskEnvironment.step` that end an episode as a failure of the policy: RLBench
# 02720bb raises InvalidActionError for an action of the wrong shape (arm_action_modes.py:18-22,
# gripper_action_modes.py:9-13), a non-unit quaternion (arm_action_modes.py:25-27), a target outside
# the workspace (:208-216), and in place of PyRep's ConfigurationPathError (planning, :268-272) and
# IKError (IK mode, :326-330); neither PyRep error escapes `step`. Anything else is an error.
FAILURE_ERRORS = ("InvalidActionError",)


def task_class_name(task: str) -> str:
    """RLBench's class name of a task file name: pick_and_lift -> PickAndLift."""
    return "".join(word[:1].upper() + word[1:] for word in task.split("_"))


def load_api() -> SimpleNamespace:
    """The RLBench and PyRep names this backend uses; RlmtlError with INSTALL_MESSAGE when absent."""
    import importlib

    try:
        from pyrep.const import RenderMode
        from pyrep.errors import ConfigurationPathError, IKError
        from rlbench.action_modes.action_mode import MoveArmThenGripper
        from rlbench.action_modes.arm_action_modes import EndEffectorPoseViaPlanning, JointVelocity
        from rlbench.action_modes.gripper_action_modes import Discrete
        from rlbench.backend.exceptions import InvalidActionError, TaskEnvironmentError
        from rlbench.environment import Environment
        from rlbench.observation_config import CameraConfig, ObservationConfig
    except ImportError as error:
        raise RlmtlError(f"{INSTALL_MESSAGE} ({error})") from None

    def task_class(task: str) -> type:
        return getattr(importlib.import_module(f"rlbench.tasks.{task}"), task_class_name(task))

    return SimpleNamespace(
        Environment=Environment,
        ObservationConfig=ObservationConfig,
        CameraConfig=CameraConfig,
        RenderMode=RenderMode,
        MoveArmThenGripper=MoveArmThenGripper,
        EndEffectorPoseViaPlanning=EndEffectorPoseViaPlanning,
        JointVelocity=JointVelocity,
        Discrete=Discrete,
        InvalidActionError=InvalidActionError,
        TaskEnvironmentError=TaskEnvironmentError,
        IKError=IKError,
        ConfigurationPathError=ConfigurationPathError,
        task_class=task_class,
    )


@dataclass(frozen=True)
class RLBenchOptions:
    """The RLBench backend's options (`env.options` of a config); checked on construction."""

    action_mode: str = field(
        default="keyframe", metadata={"help": "keyframe (next gripper pose, EndEffectorPoseViaPlanning) or joint_velocity"}
    )
    variation: int = field(default=0, metadata={"help": "task variation of demos and evaluation; -1 = a random one per scene"})
    render_mode: str = field(default="opengl", metadata={"help": "camera renderer, opengl or opengl3 (demos and evaluation must match)"})

    def __post_init__(self) -> None:
        if self.action_mode not in ACTION_MODES:
            raise ValueError(f"action_mode: {self.action_mode!r} is not one of {', '.join(ACTION_MODES)}")
        if self.render_mode not in RENDER_MODES:
            raise ValueError(f"render_mode: {self.render_mode!r} is not one of {', '.join(RENDER_MODES)}")
        if isinstance(self.variation, bool) or not isinstance(self.variation, int) or self.variation < -1:
            raise ValueError(f"variation: {self.variation!r} must be -1 (random) or a variation number >= 0")


def rlbench_options(settings: EnvSettings) -> RLBenchOptions:
    """The RLBench options of `settings` (checked when they were made)."""
    options = settings.options
    if not isinstance(options, RLBenchOptions):
        raise RlmtlError(f"the rlbench backend needs RLBenchOptions, got {type(options).__name__}")
    return options


def observation_config(api: Any, settings: EnvSettings, render_mode: str) -> Any:
    """A fresh ObservationConfig: RGB only, for the configured cameras (and the video camera), plus
    the low-dim fields rlmtl reads. Depth, masks and point clouds are off (they cost render time)."""
    mode = api.RenderMode.OPENGL3 if render_mode == "opengl3" else api.RenderMode.OPENGL
    cameras = {}
    for camera in CAMERAS:
        config = api.CameraConfig()
        config.set_all(False)
        size = settings.image_size if camera in settings.cameras else settings.video_size if camera == settings.video_camera else 0
        if size:
            config.rgb = True
            config.image_size = (size, size)
            config.render_mode = mode
        cameras[f"{camera}_camera"] = config
    return api.ObservationConfig(
        **cameras,
        joint_velocities=True,
        joint_positions=True,
        joint_forces=False,
        gripper_open=True,
        gripper_pose=True,
        gripper_matrix=False,
        gripper_joint_positions=False,
        gripper_touch_forces=False,
        task_low_dim_state=True,
    )


def _same_generator_state(recorded: Any, expected: tuple) -> bool:
    """Whether `recorded` is numpy's legacy generator state `expected` ('MT19937', keys, pos, has_gauss, cached)."""
    if not isinstance(recorded, tuple) or len(recorded) != len(expected):
        return False
    return all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(recorded, expected))


def _shutdown(environment: Any) -> None:
    try:
        environment.shutdown()
    except Exception:  # noqa: BLE001  (shutting down a simulator that never launched)
        pass


class RLBenchTaskEnv(TaskEnv):
    """One RLBench task in a headless CoppeliaSim."""

    def __init__(self, settings: EnvSettings, api: Any | None = None) -> None:
        import gymnasium as gym

        options = rlbench_options(settings)
        self.settings = settings
        self.action_mode: str = options.action_mode
        self.variation: int = options.variation
        default_horizon = KEYFRAME_HORIZON if self.action_mode == "keyframe" else JOINT_VELOCITY_HORIZON
        self.max_episode_steps = settings.max_episode_steps or default_horizon
        api = api if api is not None else load_api()
        self._api = api
        self._failures = tuple(getattr(api, name) for name in FAILURE_ERRORS)
        self._environment = api.Environment(
            action_mode=make_action_mode(api, self.action_mode),
            obs_config=observation_config(api, settings, options.render_mode),
            headless=True,
        )
        self._finalizer = weakref.finalize(self, _shutdown, self._environment)
        self._environment.launch()
        self._task = self._environment.get_task(api.task_class(settings.task))
        spaces: dict[str, gym.Space] = {
            "state": gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32),
            "proprio": gym.spaces.Box(-np.inf, np.inf, (PROPRIO_DIM,), np.float32),
        }
        for camera in settings.cameras:
            spaces[f"rgb_{camera}"] = gym.spaces.Box(0, 255, (settings.image_size, settings.image_size, 3), np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-np.inf, np.inf, (ACTION_DIM,), np.float32)
        self._steps = 0
        self._raw: dict[str, Any] = {}
        self._observation: dict[str, np.ndarray] = {}

    def _seed_scene(self, seed: int) -> None:
        # RLBench places objects with numpy's (and Python's) global generators
        np.random.seed(int(seed) % 2**32)
        random.seed(int(seed))
        if self.variation < 0:
            self._task.sample_variation()
        else:
            self._task.set_variation(self.variation)

    def _accept(self, observation: Any) -> dict[str, np.ndarray]:
        self._raw = dict(vars(observation))
        self._observation = rlmtl_observation(self._raw, self.settings.cameras)
        return self._observation

    def switch_task(self, settings: EnvSettings) -> bool:
        """Load `settings.task` into this env's running simulator (RLBench's `get_task` unloads the
        current task first, environment.py:141-151); False unless only the task differs."""
        if dataclasses.replace(settings, task=self.settings.task) != self.settings:
            return False
        self._task = self._environment.get_task(self._api.task_class(settings.task))
        self.settings = settings
        self._steps, self._raw, self._observation = 0, {}, {}
        return True

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is None:
            raise ValueError("RLBenchTaskEnv.reset needs seed=<scene seed>; scenes are always seeded")
        self._seed_scene(seed)
        try:
            descriptions, observation = self._task.reset()
        except self._api.TaskEnvironmentError as error:  # objects could not be placed (task_environment.py:75-86)
            raise SceneResetError(f"{self.settings.task} scene {seed}: TaskEnvironmentError: {error}") from None
        self._steps = 0
        self._accept(observation)
        task_state = self._raw.get("task_low_dim_state")
        variation = float((self._raw.get("misc") or {}).get("variation_index", self.variation))
        scene = np.concatenate([[variation], np.asarray(task_state if task_state is not None else [], dtype=np.float64).reshape(-1)])
        return self._observation, {"scene": scene, "success": False, "descriptions": list(descriptions)}

    def step(self, action: np.ndarray):
        self._steps += 1
        try:
            command = to_rlbench_action(action, self.action_mode)
        except ValueError:  # non-finite values or a zero quaternion: RLBench would refuse it too
            return self._observation, 0.0, False, True, {"success": False, "failure": "InvalidActionError"}
        try:
            observation, reward, terminate = self._task.step(command)
        except self._failures as error:
            return self._observation, 0.0, False, True, {"success": False, "failure": type(error).__name__}
        success = float(reward) >= 1.0
        # RLBench also terminates on a task's fail condition; the episode then ends unsolved
        truncated = not success and (bool(terminate) or self._steps >= self.max_episode_steps)
        return self._accept(observation), float(reward), success, truncated, {"success": success}

    def render(self) -> np.ndarray:
        camera = self.settings.video_camera or (self.settings.cameras[0] if self.settings.cameras else "front")
        frame = self._raw.get(f"{camera}_rgb")
        if frame is None:
            raise RlmtlError(f"no {camera} frame to render: set eval.video_camera to a camera rendered by this env")
        return np.ascontiguousarray(frame, dtype=np.uint8)

    def live_demo(self, seed: int) -> Any | None:
        """One demo from RLBench's motion planner in the scene of `seed`, or None when that scene
        gives none (a failed attempt: the collector moves on to the next scene seed).

        `get_demos(1, live_demos=True, max_attempts=1)`: RLBench's own retries would draw the next
        scene from wherever the global generator stands after the failed try
        (task_environment.py:141-163, `random_seed = np.random.get_state()` per try), so a demo
        after a retry is not the scene of `seed`. With one try the demo's `random_seed` must be the
        state seeded here; it is checked. The `reset` in that loop is outside RLBench's `try`, so
        its TaskEnvironmentError (a scene that cannot be placed) reaches here and is a failed attempt too."""
        self._seed_scene(seed)
        seeded = np.random.get_state()
        try:
            (demo,) = self._task.get_demos(1, live_demos=True, max_attempts=1)
        except RuntimeError:  # "Could not collect demos" (task_environment.py:160-162)
            return None
        except self._api.TaskEnvironmentError:
            return None
        if not _same_generator_state(getattr(demo, "random_seed", None), seeded):
            raise SceneResetError(f"{self.settings.task} scene {seed}: RLBench recorded a demo of another scene (its random_seed differs)")
        return demo

    def close(self) -> None:
        self._finalizer()


class RLBenchSuite(Suite):
    """RLBench 10 tasks of Auto-Lambda (variation 0 by default)."""

    backend = "rlbench"
    simulators_per_process = 1  # each PyRep instance needs its own process (PyRep README.md:185-187)

    def __init__(self, name: str, task_names: list[str], api_loader: Any = None) -> None:
        self.name = name
        self.task_names = list(task_names)
        self.max_episode_steps = KEYFRAME_HORIZON
        self.default_camera = "front"
        self.cameras = list(CAMERAS)
        self._api_loader = api_loader

    def observation_spec(self, cameras: list[str], image_size: int) -> dict[str, ArraySpec]:
        unknown = [c for c in cameras if c not in CAMERAS]
        if unknown:
            raise KeyError(f"unknown RLBench camera(s) {unknown} (cameras: {', '.join(CAMERAS)})")
        spec = {"state": ArraySpec((STATE_DIM,), "float32"), "proprio": ArraySpec((PROPRIO_DIM,), "float32")}
        for camera in cameras:
            spec[f"rgb_{camera}"] = ArraySpec((image_size, image_size, 3), "uint8", 0, 255)
        return spec

    def action_spec(self) -> ArraySpec:
        return ArraySpec((ACTION_DIM,), "float32")

    def action_kind(self, options: Any) -> str:
        mode = options.action_mode if isinstance(options, RLBenchOptions) else "keyframe"
        return "keyframe_pose" if mode == "keyframe" else "continuous"

    def episode_limit(self, options: Any) -> int:
        mode = options.action_mode if isinstance(options, RLBenchOptions) else "keyframe"
        return KEYFRAME_HORIZON if mode == "keyframe" else JOINT_VELOCITY_HORIZON

    def renderer(self, options: Any) -> str | None:
        return options.render_mode if isinstance(options, RLBenchOptions) else None

    def video_fps(self, task: str, options: Any) -> float:
        """`joint_velocity`: one step is one CoppeliaSim simulation step, 50 ms by default (PyRep's
        `set_simulation_timestep`; not checked against a running RLBench scene), so 20. `keyframe`: one
        step is a whole planned motion of no fixed length, so there is no real-time rate; 2 steps per
        second, slow enough to follow the poses."""
        mode = options.action_mode if isinstance(options, RLBenchOptions) else "keyframe"
        return JOINT_VELOCITY_FPS if mode == "joint_velocity" else KEYFRAME_VIDEO_FPS

    def make_env(self, settings: EnvSettings) -> TaskEnv:
        self.task_index(settings.task)
        self.observation_spec(list(settings.cameras), settings.image_size)
        rlbench_options(settings)
        api = (self._api_loader or load_api)()
        return RLBenchTaskEnv(settings, api)

    def record_demo(self, env: TaskEnv, scene_seed: int, attempt: int):
        """A live demo in scene `scene_seed` as a dataset Episode; None when RLBench gave up."""
        assert isinstance(env, RLBenchTaskEnv)
        demo = env.live_demo(scene_seed)
        if demo is None:
            return None
        data = demo_to_data(demo, f"live demo of {env.settings.task}")
        cameras = env.settings.cameras
        return demo_episode(data, live_images(data, cameras), cameras, env.action_mode, scene_seed=scene_seed, attempt=attempt)


@BACKENDS.register("rlbench")
class RLBenchBackend(Backend):
    """CoppeliaSim 4.1.0 + PyRep + RLBench (see docker/rlbench.Dockerfile)."""

    name = "rlbench"
    suite_names = ["rlbench10"]
    options_class = RLBenchOptions

    def make_suite(self, suite: str) -> Suite:
        if suite != "rlbench10":
            raise KeyError(f"unknown suite {suite!r} of backend 'rlbench' (suites: rlbench10)")
        return RLBenchSuite("rlbench10", RLBENCH10_TASKS)
