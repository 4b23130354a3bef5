"""The backend interface every simulator implements.

A *backend* (Meta-World, RLBench, ...) offers one or more *suites*. A suite names its tasks,
declares its observation and action specs, its episode length and (where the simulator has
them) a scripted expert per task, and makes one gymnasium `Env` per task.

Scenes are seeded: `env.reset(seed=scene_seed(split, base_seed, task_index, episode))` builds the
same scene on every run, and the "train" (demos) and "eval" splits draw from disjoint seed
streams, so evaluation scenes never coincide with demo scenes.
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import gymnasium as gym
import numpy as np

from rlmtl.registry import Registry

if TYPE_CHECKING:
    from rlmtl.data.dataset import Episode

SPLITS = {"train": 0, "eval": 1}
DEFAULT_VIDEO_FPS = 20.0  # `Suite.video_fps` of a backend that does not override it

Observation = dict[str, np.ndarray]
Expert = Callable[[Observation], np.ndarray]


@dataclass(frozen=True)
class ArraySpec:
    """Shape, dtype and (for actions) bounds of one array."""

    shape: tuple[int, ...]
    dtype: str
    low: float | None = None
    high: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "dtype": self.dtype, "low": self.low, "high": self.high}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ArraySpec":
        return cls(tuple(int(s) for s in data["shape"]), str(data["dtype"]), data.get("low"), data.get("high"))


@dataclass(frozen=True)
class NoOptions:
    """The options of a backend that has none (the default `Backend.options_class`)."""


def identifying_options(options: Any) -> dict[str, Any]:
    """The backend options that name a dataset and key an episode log: every field of `options`,
    except a field marked `fingerprint_when_set` in its metadata while it holds its default (an
    option added later: what was cached or logged before it keeps its name)."""
    return {
        f.name: getattr(options, f.name)
        for f in dataclasses.fields(options)
        if not (f.metadata.get("fingerprint_when_set") and getattr(options, f.name) == f.default)
    }


@dataclass(frozen=True)
class EnvSettings:
    """What an environment must produce: frozen, hashable and picklable, so worker processes can
    rebuild it and cache environments by it.

    `options` is the backend's options object (an instance of its `Backend.options_class`, the
    `env.options` of a config); None means the backend's defaults.
    """

    backend: str
    suite: str
    task: str
    cameras: tuple[str, ...] = ()
    image_size: int = 64
    max_episode_steps: int = 0
    video_camera: str = ""
    video_size: int = 0
    options: Any = None

    def __post_init__(self) -> None:
        expected = BACKENDS.get(self.backend).options_class if self.backend in BACKENDS else None
        options = self.options
        if options is None:
            options = expected() if expected is not None else NoOptions()
            object.__setattr__(self, "options", options)
        if not dataclasses.is_dataclass(options) or isinstance(options, type):
            raise TypeError(f"EnvSettings.options must be a backend's options object, got {options!r}")
        if expected is not None and not isinstance(options, expected):
            raise TypeError(f"options of backend {self.backend!r} must be {expected.__name__}, got {type(options).__name__}")


class TaskEnv(gym.Env):
    """A gymnasium Env for one task. Observations are dicts of numpy arrays.

    `reset(seed=s)` must build the same scene for the same `s`; `info["scene"]` (a float vector)
    identifies it. `step` reports `info["success"]` (bool). `render()` returns an HxWx3 uint8
    frame from the video camera when `EnvSettings.video_size > 0`.
    """

    metadata = {"render_modes": ["rgb_array"]}
    render_mode = "rgb_array"

    def switch_task(self, settings: "EnvSettings") -> bool:
        """Make this env the env of `settings` (another task of the same suite, same cameras and
        options) in place and return True, or return False when it cannot; then the caller closes
        it and makes a new one. A simulator that allows one instance per process (RLBench) switches
        tasks this way instead of starting a second instance."""
        return False


class SceneResetError(RuntimeError):
    """The simulator could not build the scene of a seed (e.g. RLBench's TaskEnvironmentError
    when objects cannot be placed): the episode or demo attempt ends in an error of this kind."""


class Suite(abc.ABC):
    """A named set of tasks of one backend."""

    backend: str
    name: str
    task_names: list[str]
    max_episode_steps: int
    default_camera: str
    cameras: list[str]
    # how many of this backend's simulators one process may hold at a time (None: no limit);
    # `rlmtl.envs.process_envs.ProcessEnvs` keeps to it by switching tasks or closing envs
    simulators_per_process: ClassVar[int | None] = None
    # environment steps per second of simulated time (None: not declared); the frame rate of
    # exported datasets (`rlmtl export --format lerobot`)
    steps_per_second: ClassVar[int | None] = None

    @abc.abstractmethod
    def observation_spec(self, cameras: list[str], image_size: int) -> dict[str, ArraySpec]:
        """Spec of every observation key the env returns with these cameras."""

    @abc.abstractmethod
    def action_spec(self) -> ArraySpec:
        """Spec of the action vector (bounds included)."""

    @abc.abstractmethod
    def make_env(self, settings: EnvSettings) -> TaskEnv:
        """Build the gymnasium Env of `settings.task`."""

    def make_expert(self, task: str) -> Expert | None:
        """A scripted expert for `task`, or None when the backend has none."""
        return None

    def record_demo(self, env: TaskEnv, scene_seed: int, attempt: int) -> "Episode | None":
        """One demo of `env`'s task in scene `scene_seed` from the simulator's own demonstrator
        (e.g. RLBench's motion planner), for suites without a scripted expert; None when that
        attempt failed. Suites with `make_expert` need not implement it."""
        raise NotImplementedError(f"suite {self.name!r} has neither a scripted expert nor a demo recorder")

    def renderer(self, options: Any) -> str | None:
        """The camera renderer that backend `options` select, recorded in datasets so that data and
        evaluation can be compared (None: the backend has one renderer)."""
        return None

    def video_fps(self, task: str, options: Any) -> float:
        """Env steps per second of simulated time for `task` under backend `options`: a video of
        one frame per step plays in real time at this rate. `DEFAULT_VIDEO_FPS` for a backend
        that does not say."""
        return DEFAULT_VIDEO_FPS

    def action_kind(self, options: Any) -> str:
        """What an action of this suite is under backend `options`: "continuous" (a control vector
        within `action_spec`'s bounds) or "keyframe_pose" (the next gripper pose
        `[x, y, z, qx, qy, qz, qw, gripper_open]`); an action head may require one."""
        return "continuous"

    def episode_limit(self, options: Any) -> int:
        """Steps of an episode that runs to its limit under backend `options` (env.max_episode_steps = 0)."""
        return self.max_episode_steps

    def select_tasks(self, requested: list[str]) -> list[str]:
        """`requested` validated against the suite (empty = every task, in the suite's order)."""
        for task in requested:
            self.task_index(task)
        if len(set(requested)) != len(requested):
            raise KeyError(f"duplicate task names in {requested}")
        return list(requested) or list(self.task_names)

    def task_index(self, task: str) -> int:
        try:
            return self.task_names.index(task)
        except ValueError:
            raise KeyError(f"unknown task {task!r} in suite {self.name!r} (tasks: {', '.join(self.task_names)})") from None


class Backend(abc.ABC):
    """A simulator: a factory of suites.

    `options_class` is a frozen dataclass of the backend's options (`env.options` in a config,
    `EnvSettings.options` for its environments): one field per option with a default and
    `metadata={"help": ...}`, values that are hashable scalars, and value checks in
    `__post_init__` that raise ValueError("<option>: <what is wrong>"). Define it at module level:
    worker processes unpickle it with the EnvSettings.
    """

    name: str
    suite_names: list[str]
    options_class: ClassVar[type] = NoOptions

    @abc.abstractmethod
    def make_suite(self, suite: str) -> Suite:
        """The suite called `suite`."""


BACKENDS: Registry[type[Backend]] = Registry("backend")


def make_suite(backend: str, suite: str) -> Suite:
    """Look up a backend by name and return its suite; unknown names raise KeyError naming them."""
    instance = BACKENDS.get(backend)()
    if suite not in instance.suite_names:
        raise KeyError(f"unknown suite {suite!r} of backend {backend!r} (suites: {', '.join(instance.suite_names)})")
    return instance.make_suite(suite)


def scene_seed(split: str, base_seed: int, task_index: int, episode: int) -> int:
    """Seed of episode `episode` of task `task_index` in `split` ("train" or "eval").

    Each (split, base_seed, task, episode) tuple gets its own SeedSequence stream, so splits never
    share a seed and the scene of an episode does not depend on how many episodes are run.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (splits: {', '.join(SPLITS)})")
    sequence = np.random.SeedSequence([SPLITS[split], base_seed, task_index, episode])
    return int(sequence.generate_state(1, dtype=np.uint32)[0])
