"""Test plugin (load with RLMTL_PLUGINS=fault_plugin): a tiny simulator that can crash for real.

Backend `faulty`, suite `toy`: three tasks (with a scripted expert, for collection) whose
episodes last at most 8 steps and end by the scene seed alone (seed % 4 == 0 solved at step 3, == 1 an `ik_error` failure at step 2, else the
step limit), so outcomes do not depend on the policy or on which process ran them.

Faults are read from the JSON file named by $RLMTL_TEST_FAULTS:
`{"faults": [{"task": T, "seed": S, "mode": M, "times": N, "at": "reset"|"step"}],
"marker_dir": D, "count_file": C, "step_sleep_s": X, "delete_at_reset": F}`. The first N runs of (T, S) (counted with
marker files in D, so across processes) do M: `exit` (os._exit(1)), `segv` (a real segmentation
fault), `hang` (sleep for an hour), `raise` (RuntimeError). Every reset appends a line
"task seed" to C, so a test can count the episodes actually executed, and removes the file F.
"""

from __future__ import annotations

import ctypes
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlmtl.envs.base import BACKENDS, ArraySpec, Backend, EnvSettings, Suite, TaskEnv

TASKS = ["alpha", "beta", "gamma"]
MAX_STEPS = 8


def _settings() -> dict[str, Any]:
    path = os.environ.get("RLMTL_TEST_FAULTS")
    return json.loads(Path(path).read_text()) if path else {}


def _maybe_fault(task: str, seed: int, where: str) -> None:
    settings = _settings()
    for fault in settings.get("faults", []):
        if fault["task"] != task or int(fault["seed"]) != seed or fault.get("at", "step") != where:
            continue
        folder = Path(settings["marker_dir"])
        folder.mkdir(parents=True, exist_ok=True)
        prefix = f"{task}-{seed}-{fault['mode']}-"
        runs = len(list(folder.glob(prefix + "*")))
        if runs >= int(fault["times"]):
            continue
        (folder / f"{prefix}{runs}").write_text(str(os.getpid()))
        mode = fault["mode"]
        if mode == "exit":
            os._exit(1)
        if mode == "segv":
            ctypes.string_at(0)  # reads address 0: SIGSEGV
        if mode == "hang":
            time.sleep(3600)
        if mode == "raise":
            raise RuntimeError(f"injected fault in {task} seed {seed}")


class ToyEnv(TaskEnv):
    """Outcome fixed by the scene seed; see the module docstring."""

    def __init__(self, settings: EnvSettings) -> None:
        self.task = settings.task
        self.limit = settings.max_episode_steps or MAX_STEPS
        self.seed_value = 0
        self.t = 0

    def reset(self, seed: int | None = None, options: dict | None = None):
        self.seed_value = int(seed or 0)
        self.t = 0
        settings = _settings()
        if settings.get("count_file"):
            with open(settings["count_file"], "a") as handle:
                handle.write(f"{self.task} {self.seed_value}\n")
        doomed = settings.get("delete_at_reset")  # a file removed under the evaluation (a pruned checkpoint)
        if doomed:
            Path(doomed).unlink(missing_ok=True)
        _maybe_fault(self.task, self.seed_value, "reset")
        state = np.random.default_rng(self.seed_value).standard_normal(4).astype(np.float32)
        return {"state": state}, {"scene": state}

    def step(self, action: np.ndarray):
        self.t += 1
        _maybe_fault(self.task, self.seed_value, "step")
        time.sleep(float(_settings().get("step_sleep_s", 0.0)))
        kind = self.seed_value % 4
        success = kind == 0 and self.t >= 3
        info: dict[str, Any] = {"success": success}
        if kind == 1 and self.t >= 2:
            info["failure"] = "ik_error"
        state = np.full(4, self.t, dtype=np.float32)
        return {"state": state}, float(success), success, self.t >= self.limit, info

    def render(self) -> np.ndarray:
        return np.full((16, 16, 3), self.t, dtype=np.uint8)


class ToySuite(Suite):
    backend = "faulty"
    name = "toy"
    task_names = TASKS
    max_episode_steps = MAX_STEPS
    default_camera = "top"
    cameras = ["top"]

    def observation_spec(self, cameras: list[str], image_size: int) -> dict[str, ArraySpec]:
        return {"state": ArraySpec((4,), "float32")}

    def action_spec(self) -> ArraySpec:
        return ArraySpec((2,), "float32", -1.0, 1.0)

    def make_env(self, settings: EnvSettings) -> TaskEnv:
        return ToyEnv(settings)

    def make_expert(self, task: str):
        """A scripted "expert" (zeros): whether its demo succeeds is fixed by the scene seed."""
        return lambda observation: np.zeros(2, dtype=np.float32)


if "faulty" not in BACKENDS:

    @BACKENDS.register("faulty")
    class FaultyBackend(Backend):
        name = "faulty"
        suite_names = ["toy"]

        def make_suite(self, suite: str) -> Suite:
            return ToySuite()


def make_toy_run(folder: Path, **eval_section: Any) -> Path:
    """A run folder holding an untrained agent's checkpoint for the toy suite (no training)."""
    from rlmtl.build import agent_meta, build_agent
    from rlmtl.config import config_from_dict
    from rlmtl.training.checkpoint import save_checkpoint, update_last_pointer

    config = config_from_dict(
        {
            "env": {"backend": "faulty", "suite": "toy"},
            "agent": {"hidden_dim": 16, "num_layers": 1},
            "eval": {"episodes_per_task": 4, "workers": 2, **eval_section},
        }
    )
    suite = ToySuite()
    meta = agent_meta(config, suite.task_names, {k: v.to_dict() for k, v in suite.observation_spec([], 64).items()}, 2)
    torch.manual_seed(0)
    agent = build_agent(meta)
    checkpoints = folder / "checkpoints"
    path = save_checkpoint(checkpoints / "step_00000001.pt", {"meta": meta, "step": 1, "model": agent.state_dict()})
    update_last_pointer(checkpoints, path)
    return folder


def write_faults(path: Path, faults: list[dict[str, Any]], **extra: Any) -> Path:
    """Write a fault file next to marker and count files; returns its path."""
    path.write_text(
        json.dumps({"faults": faults, "marker_dir": str(path.parent / "markers"), "count_file": str(path.parent / "count.txt"), **extra})
    )
    return path
