"""A test double of RLBench + PyRep: the same classes, method signatures and exception classes
(RLBench 02720bb, PyRep 8f420be), over a toy reaching world instead of CoppeliaSim.

World: the gripper starts at START; `reset` draws a target from numpy's global generator (as
RLBench places objects). Keyframe mode (EndEffectorPoseViaPlanning + Discrete) moves the gripper to
the commanded pose; the task succeeds when the gripper is within 2 cm of the target and closed.

It fails where RLBench 02720bb / PyRep 8f420be fail, with their exception classes:
- a second launched Environment in one process is refused (PyRep README.md:185-187: each PyRep
  instance needs its own process; the real thing hangs or crashes), and so is launching one twice
  (environment.py:98-99, "Already called launch!"); `get_task` unloads the previous task
  (environment.py:141-151), whose TaskEnvironment then refuses to be used;
- `step` splits the action as MoveArmThenGripper does (action_mode.py:37-42) and checks each part's
  shape (arm (7,), gripper (1,): InvalidActionError, arm_action_modes.py:18-22,
  gripper_action_modes.py:9-13); in planning mode a non-unit quaternion, a target outside the
  workspace, below the table (z < 0.75) or behind an obstacle (x < -0.3) raise InvalidActionError
  only (RLBench wraps PyRep's ConfigurationPathError, arm_action_modes.py:268-272); the gripper
  value is not range-checked (RLBench's check `0.0 > a > 1.0` never holds, gripper_action_modes.py:61);
- `reset` raises TaskEnvironmentError when the scene cannot be placed (task_environment.py:82-86),
  here with probability `placement_failure_rate` drawn from the global generator;
- live `get_demos` tries `max_attempts` times, each from the generator's current state, with the
  `reset` outside its `try` (task_environment.py:141-163); the first `demo_failures` tries fail.
Knobs for worker processes: RLBENCH_DOUBLE_DEMO_FAILURES, RLBENCH_DOUBLE_PLACEMENT_FAILURE_RATE, and
RLBENCH_DOUBLE_LOG (a file each process appends its launches, task switches and shutdowns to).
`make_api()` returns the namespace that `rlmtl.envs.rlbench_backend.load_api` returns for the real thing.
"""

from __future__ import annotations

import os
from enum import Enum
from types import SimpleNamespace
from typing import Any, Callable, List

import numpy as np

START = np.array([0.2, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0])
TABLE_Z = 0.75
WORKSPACE = (np.array([-1.0, -1.0, 0.5]), np.array([1.0, 1.0, 1.8]))
CALLS: dict[str, int] = {"launch": 0, "shutdown": 0, "get_task": 0}
LAUNCHED: list = []  # the Environments launched and not shut down in this process


class InvalidActionError(Exception):
    """rlbench.backend.exceptions.InvalidActionError"""


class TaskEnvironmentError(Exception):
    """rlbench.backend.exceptions.TaskEnvironmentError"""


class IKError(Exception):
    """pyrep.errors.IKError"""


class ConfigurationPathError(Exception):
    """pyrep.errors.ConfigurationPathError"""


def _log(event: str) -> None:
    """Append `<pid> <event>` to $RLBENCH_DOUBLE_LOG (how tests see what worker processes did)."""
    path = os.environ.get("RLBENCH_DOUBLE_LOG")
    if path:
        with open(path, "a") as handle:
            handle.write(f"{os.getpid()} {event}\n")


def _assert_action_shape(action: np.ndarray, expected_shape: tuple) -> None:
    if np.shape(action) != expected_shape:
        raise InvalidActionError(f"Expected the action shape to be: {expected_shape}, but was shape: {np.shape(action)}")


class RenderMode(Enum):
    OPENGL = 0
    OPENGL3 = 1


class Identity:
    pass


class CameraConfig:
    def __init__(
        self,
        rgb=True,
        rgb_noise=Identity(),
        depth=True,
        depth_noise=Identity(),
        point_cloud=True,
        mask=True,
        image_size=(128, 128),
        render_mode=RenderMode.OPENGL3,
        masks_as_one_channel=True,
        depth_in_meters=False,
    ):
        self.rgb, self.depth, self.point_cloud, self.mask = rgb, depth, point_cloud, mask
        self.image_size, self.render_mode = image_size, render_mode

    def set_all(self, value: bool):
        self.rgb = self.depth = self.point_cloud = self.mask = value


class ObservationConfig:
    def __init__(
        self,
        left_shoulder_camera: CameraConfig = None,
        right_shoulder_camera: CameraConfig = None,
        overhead_camera: CameraConfig = None,
        wrist_camera: CameraConfig = None,
        front_camera: CameraConfig = None,
        joint_velocities=True,
        joint_velocities_noise=Identity(),
        joint_positions=True,
        joint_positions_noise=Identity(),
        joint_forces=True,
        joint_forces_noise=Identity(),
        gripper_open=True,
        gripper_pose=True,
        gripper_matrix=False,
        gripper_joint_positions=False,
        gripper_touch_forces=False,
        wrist_camera_matrix=False,
        record_gripper_closing=False,
        task_low_dim_state=False,
    ):
        cameras = dict(
            left_shoulder=left_shoulder_camera,
            right_shoulder=right_shoulder_camera,
            overhead=overhead_camera,
            wrist=wrist_camera,
            front=front_camera,
        )
        self.cameras = {name: config if config is not None else CameraConfig() for name, config in cameras.items()}
        self.joint_velocities, self.joint_positions, self.gripper_open, self.gripper_pose = (
            joint_velocities,
            joint_positions,
            gripper_open,
            gripper_pose,
        )
        self.task_low_dim_state = task_low_dim_state


class EndEffectorPoseViaPlanning:
    def __init__(self, absolute_mode: bool = True, frame=None, collision_checking: bool = False):
        self.absolute_mode = absolute_mode


class JointVelocity:
    pass


class Discrete:
    def __init__(self, attach_grasped_objects: bool = True, detach_before_open: bool = True):
        pass


class MoveArmThenGripper:
    def __init__(self, arm_action_mode, gripper_action_mode):
        self.arm_action_mode, self.gripper_action_mode = arm_action_mode, gripper_action_mode


class Observation:
    def __init__(self, **attributes: Any):
        self.__dict__.update(attributes)


class Demo:
    def __init__(self, observations, random_seed=None, num_reset_attempts=None):
        self._observations, self.random_seed, self.num_reset_attempts = observations, random_seed, num_reset_attempts

    def __len__(self):
        return len(self._observations)

    def __getitem__(self, i):
        return self._observations[i]


class ReachTask:
    """Stands for any rlbench.tasks class."""

    name = "reach"


class TaskEnvironment:
    def __init__(self, environment: "Environment", task_class: type):
        self._environment = environment
        self._task_class = task_class
        self._variation_number = 0
        self._reset_called = False
        self._unloaded = False
        self.actions: list[np.ndarray] = []
        self.demo_failures = int(os.environ.get("RLBENCH_DOUBLE_DEMO_FAILURES", "0"))
        self.placement_failure_rate = float(os.environ.get("RLBENCH_DOUBLE_PLACEMENT_FAILURE_RATE", "0"))
        self.demo_attempts = 0

    def _check_loaded(self) -> None:
        if self._unloaded or not self._environment._launched:
            raise RuntimeError("this task is no longer in the scene (get_task loaded another one, or the simulator shut down)")

    def get_name(self) -> str:
        return self._task_class.name

    def sample_variation(self) -> int:
        self._variation_number = np.random.randint(0, self.variation_count())
        return self._variation_number

    def set_variation(self, v: int) -> None:
        if v >= self.variation_count():
            raise TaskEnvironmentError("Requested variation %d, but there are only %d variations." % (v, self.variation_count()))
        self._variation_number = v

    def variation_count(self) -> int:
        return 3

    def reset(self, demo=None) -> (List[str], Observation):
        self._check_loaded()
        if self.placement_failure_rate > 0 and np.random.uniform() < self.placement_failure_rate:
            raise TaskEnvironmentError(
                f"Could not place the task {self.get_name()} in the scene. This should not happen, please raise an issues on this task."
            )
        self.target = np.array([np.random.uniform(-0.2, 0.4), np.random.uniform(-0.3, 0.3), np.random.uniform(0.8, 1.1)])
        self.pose = START.copy()
        self.gripper_open = 1.0
        self.joints = np.zeros(7)
        self.velocities = np.zeros(7)
        self._reset_called = True
        return [f"reach the target {self._variation_number}"], self.get_observation()

    def get_observation(self) -> Observation:
        config = self._environment._obs_config
        attributes: dict[str, Any] = {}
        misc: dict[str, Any] = {"variation_index": self._variation_number}
        for name, camera in config.cameras.items():
            image = None
            if camera.rgb:
                height, width = camera.image_size
                image = np.zeros((height, width, 3), dtype=np.uint8)
                image[..., 0] = int(255 * np.clip(self.pose[0] + 0.5, 0, 1))
                image[..., 1] = int(255 * np.clip(self.target[1] + 0.5, 0, 1))
                image[..., 2] = 40 + 20 * len(name)
            attributes[f"{name}_rgb"] = image
            for kind in ("depth", "mask", "point_cloud"):
                attributes[f"{name}_{kind}"] = None
            misc[f"{name}_camera_near"], misc[f"{name}_camera_far"] = 0.01, 4.5
        attributes.update(
            joint_velocities=self.velocities.copy() if config.joint_velocities else None,
            joint_positions=self.joints.copy() if config.joint_positions else None,
            joint_forces=None,
            gripper_open=self.gripper_open if config.gripper_open else None,
            gripper_pose=self.pose.copy() if config.gripper_pose else None,
            gripper_matrix=None,
            gripper_joint_positions=None,
            gripper_touch_forces=None,
            task_low_dim_state=self.target.copy() if config.task_low_dim_state else None,
            misc=misc,
        )
        return Observation(**attributes)

    def _success(self) -> bool:
        return bool(np.linalg.norm(self.pose[:3] - self.target) < 0.02 and self.gripper_open == 0.0)

    def step(self, action) -> (Observation, int, bool):
        self._check_loaded()
        if not self._reset_called:
            raise RuntimeError("Call 'reset' before calling 'step' on a task.")
        arm_action, gripper_action = np.array(action[:7]), np.array(action[7:])  # MoveArmThenGripper's split
        _assert_action_shape(arm_action, (7,))
        self.actions.append(np.asarray(action, dtype=np.float64).copy())
        arm = self._environment._action_mode.arm_action_mode
        if isinstance(arm, EndEffectorPoseViaPlanning):
            if not np.isclose(np.linalg.norm(arm_action[3:]), 1.0):
                raise InvalidActionError("Action contained non unit quaternion!")
            if not (np.all(arm_action[:3] >= WORKSPACE[0]) and np.all(arm_action[:3] <= WORKSPACE[1])):
                raise InvalidActionError("A path could not be found because the target is outside of workspace.")
            if arm_action[2] < TABLE_Z or arm_action[0] < -0.3:
                raise InvalidActionError(
                    "A path could not be found. Most likely due to the target being inaccessible or a collison was detected."
                )
            self.velocities = (arm_action - self.pose) * 0.1
            self.pose = arm_action.astype(np.float64).copy()
        else:
            self.velocities = arm_action.astype(np.float64).copy()
            self.joints = self.joints + 0.05 * self.velocities
            self.pose = self.pose + np.concatenate([0.05 * self.velocities[:3], np.zeros(4)])
        _assert_action_shape(gripper_action, (1,))
        self.gripper_open = 1.0 if gripper_action[0] > 0.5 else 0.0
        success = self._success()
        return self.get_observation(), float(success), success

    def get_demos(
        self,
        amount: int,
        live_demos: bool = False,
        image_paths: bool = False,
        callable_each_step: Callable[[Observation], None] = None,
        max_attempts: int = 10,
        random_selection: bool = True,
        from_episode_number: int = 0,
    ) -> List[Demo]:
        self._check_loaded()
        if not live_demos:
            raise RuntimeError("Can't ask for a stored demo when no dataset root provided.")
        demos = []
        for _ in range(amount):
            attempts = max_attempts
            while attempts > 0:
                random_seed = np.random.get_state()
                self.reset()  # outside the try, as in RLBench: a TaskEnvironmentError escapes
                try:
                    demo = self._planned_demo()
                    demo.random_seed = random_seed
                    demos.append(demo)
                    break
                except Exception:  # noqa: BLE001  (RLBench logs "Bad demo." and tries again)
                    attempts -= 1
            if attempts <= 0:
                raise RuntimeError("Could not collect demos. Maybe a problem with the task?")
        return demos

    def _planned_demo(self) -> Demo:
        self.demo_attempts += 1
        if self.demo_failures > 0:
            self.demo_failures -= 1
            np.random.uniform(size=3)  # the planner draws too before it gives up
            raise RuntimeError("Demo was completed, but was not successful.")
        observations = [self.get_observation()]
        start = self.pose.copy()
        goal = np.concatenate([self.target, START[3:]])
        for i in range(1, 6):  # move, then rest at the target
            self.pose = start + (goal - start) * min(1.0, i / 4)
            self.velocities = np.full(7, 0.5 if i < 5 else 0.0)
            observations.append(self.get_observation())
        self.gripper_open = 0.0  # grasp
        observations.append(self.get_observation())
        return Demo(observations, num_reset_attempts=1)

    def reset_to_demo(self, demo: Demo) -> (List[str], Observation):
        np.random.set_state(demo.random_seed)
        self.set_variation(demo._observations[0].misc["variation_index"])
        return self.reset(demo)


class Environment:
    def __init__(
        self,
        action_mode,
        dataset_root: str = "",
        obs_config: ObservationConfig = ObservationConfig(),
        headless: bool = False,
        static_positions: bool = False,
        robot_setup: str = "panda",
        randomize_every=None,
        frequency: int = 1,
        visual_randomization_config=None,
        dynamics_randomization_config=None,
        attach_grasped_objects: bool = True,
        shaped_rewards: bool = False,
        arm_max_velocity: float = 1.0,
        arm_max_acceleration: float = 4.0,
    ):
        self._action_mode = action_mode
        self._obs_config = obs_config
        self._headless = headless
        self._launched = False
        self.task: TaskEnvironment | None = None

    def launch(self):
        if self._launched:
            raise RuntimeError("Already called launch!")
        if LAUNCHED:
            raise RuntimeError(
                "a second PyRep instance in one process: each PyRep instance needs its own process (PyRep README); "
                f"{len(LAUNCHED)} already running here"
            )
        CALLS["launch"] += 1
        self._launched = True
        LAUNCHED.append(self)
        _log("launch")

    def shutdown(self):
        if self._launched:
            CALLS["shutdown"] += 1
            LAUNCHED.remove(self)
            _log("shutdown")
        self._launched = False

    def get_task(self, task_class) -> TaskEnvironment:
        if not self._launched:
            self.launch()
        CALLS["get_task"] += 1
        _log(f"get_task {task_class.name}")
        if self.task is not None:
            self.task._unloaded = True  # the scene unloads the previous task
        self.task = TaskEnvironment(self, task_class)
        return self.task

    @property
    def action_shape(self):
        return (8,)


def make_api(environments: list | None = None) -> SimpleNamespace:
    """The namespace `load_api` returns; every Environment made is appended to `environments`."""

    class RecordingEnvironment(Environment):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if environments is not None:
                environments.append(self)

    return SimpleNamespace(
        Environment=RecordingEnvironment,
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
        task_class=lambda task: type(f"Task_{task}", (ReachTask,), {"name": task}),
    )


# parameter names of RLBench 02720bb / PyRep 8f420be, read from their sources; the integration
# tests check the real classes against this table, the unit tests check the double.
RLBENCH_PARAMETERS = {
    ("Environment", "__init__"): [
        "action_mode",
        "dataset_root",
        "obs_config",
        "headless",
        "static_positions",
        "robot_setup",
        "randomize_every",
        "frequency",
        "visual_randomization_config",
        "dynamics_randomization_config",
        "attach_grasped_objects",
        "shaped_rewards",
        "arm_max_velocity",
        "arm_max_acceleration",
    ],
    ("TaskEnvironment", "get_name"): [],
    ("TaskEnvironment", "sample_variation"): [],
    ("TaskEnvironment", "set_variation"): ["v"],
    ("TaskEnvironment", "variation_count"): [],
    ("TaskEnvironment", "reset"): ["demo"],
    ("TaskEnvironment", "get_observation"): [],
    ("TaskEnvironment", "step"): ["action"],
    ("TaskEnvironment", "get_demos"): [
        "amount",
        "live_demos",
        "image_paths",
        "callable_each_step",
        "max_attempts",
        "random_selection",
        "from_episode_number",
    ],
    ("TaskEnvironment", "reset_to_demo"): ["demo"],
    ("CameraConfig", "__init__"): [
        "rgb",
        "rgb_noise",
        "depth",
        "depth_noise",
        "point_cloud",
        "mask",
        "image_size",
        "render_mode",
        "masks_as_one_channel",
        "depth_in_meters",
    ],
    ("ObservationConfig", "__init__"): [
        "left_shoulder_camera",
        "right_shoulder_camera",
        "overhead_camera",
        "wrist_camera",
        "front_camera",
        "joint_velocities",
        "joint_velocities_noise",
        "joint_positions",
        "joint_positions_noise",
        "joint_forces",
        "joint_forces_noise",
        "gripper_open",
        "gripper_pose",
        "gripper_matrix",
        "gripper_joint_positions",
        "gripper_touch_forces",
        "wrist_camera_matrix",
        "record_gripper_closing",
        "task_low_dim_state",
    ],
    ("MoveArmThenGripper", "__init__"): ["arm_action_mode", "gripper_action_mode"],
    ("EndEffectorPoseViaPlanning", "__init__"): ["absolute_mode", "frame", "collision_checking"],
    ("Discrete", "__init__"): ["attach_grasped_objects", "detach_before_open"],
}


def parameters(cls: type, method: str) -> list[str]:
    """Parameter names of `cls.method` without self."""
    import inspect

    return [name for name in inspect.signature(getattr(cls, method)).parameters if name != "self"]


def literal_defaults(cls: type, method: str) -> dict[str, Any]:
    """Defaults that are plain values (bool, int, float, str, tuple, None)."""
    import inspect

    return {
        name: p.default
        for name, p in inspect.signature(getattr(cls, method)).parameters.items()
        if p.default is not inspect.Parameter.empty and isinstance(p.default, (bool, int, float, str, tuple, type(None)))
    }
