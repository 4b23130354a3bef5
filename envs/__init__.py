"""Simulator backends behind one interface: a `Suite` of tasks and a gymnasium `Env` per task.

Backends register themselves in `BACKENDS`; importing this package registers the built-in ones
(the simulators themselves are imported lazily, when an environment is made).
"""

from rlmtl.envs import metaworld_backend as _metaworld_backend  # noqa: F401  (registers "metaworld")
from rlmtl.envs import rlbench_backend as _rlbench_backend  # noqa: F401  (registers "rlbench"; RLBench itself loads lazily)
from rlmtl.envs.base import (
    BACKENDS,
    ArraySpec,
    Backend,
    EnvSettings,
    NoOptions,
    SceneResetError,
    Suite,
    TaskEnv,
    make_suite,
    scene_seed,
)
from rlmtl.envs.process_envs import ProcessEnvs

__all__ = [
    "BACKENDS",
    "ArraySpec",
    "Backend",
    "EnvSettings",
    "NoOptions",
    "ProcessEnvs",
    "SceneResetError",
    "Suite",
    "TaskEnv",
    "make_suite",
    "scene_seed",
]
