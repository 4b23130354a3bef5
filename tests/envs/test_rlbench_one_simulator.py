"""RLBench's hard rules, against a double that fails where RLBench and PyRep fail: one simulator
per process (tasks switch with `get_task`), shut down when a worker exits; a scene that cannot be
placed is an error of its own kind, retried and then counted; a live demo is the scene of its seed
or a failed attempt."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import rlbench_double as double
import yaml
from rlbench_fixtures import write_rlbench_dataset

import rlmtl.envs.rlbench_backend as backend
from rlmtl.cli import main
from rlmtl.envs import EnvSettings, ProcessEnvs, SceneResetError, make_suite

TASKS = ["reach_target", "stack_wine", "push_button"]


@pytest.fixture
def api(monkeypatch):
    namespace = double.make_api([])
    monkeypatch.setattr(backend, "load_api", lambda: namespace)
    yield namespace
    leaked = list(double.LAUNCHED)
    for environment in leaked:
        environment.shutdown()
    assert not leaked, "a test left a simulator running"


def settings(task: str = "reach_target", **changes) -> EnvSettings:
    base = dict(backend="rlbench", suite="rlbench10", task=task, cameras=("front",), image_size=8, options=backend.RLBenchOptions())
    return EnvSettings(**{**base, **changes})


def test_the_double_refuses_a_second_simulator_in_one_process(api):
    suite = make_suite("rlbench", "rlbench10")
    first = suite.make_env(settings())
    with pytest.raises(RuntimeError, match="second PyRep instance"):
        suite.make_env(settings("stack_wine"))
    first.close()
    suite.make_env(settings("stack_wine")).close()  # after a shutdown the next one may start


def test_process_envs_switch_tasks_inside_one_simulator(api):
    envs = ProcessEnvs()
    launches, switches = double.CALLS["launch"], double.CALLS["get_task"]
    try:
        _, first = envs.get(settings("reach_target"))
        stale_task = first._task
        for task in TASKS[1:]:
            _, env = envs.get(settings(task))
            assert env is first and env.settings.task == task
            observation, _ = env.reset(seed=3)
            assert observation["rgb_front"].shape == (8, 8, 3)
        assert double.CALLS["launch"] - launches == 1 and double.CALLS["get_task"] - switches == 3
        assert len(double.LAUNCHED) == 1 and len(envs) == 1
        with pytest.raises(RuntimeError, match="no longer in the scene"):
            stale_task.reset()  # RLBench unloaded it
        _, same = envs.get(settings("push_button"))
        assert same is first and double.CALLS["get_task"] - switches == 3  # the current task: no switch
        _, other = envs.get(settings("reach_target", cameras=("wrist",)))  # other cameras: a new simulator
        assert other is not first and len(double.LAUNCHED) == 1 and double.CALLS["launch"] - launches == 2
    finally:
        envs.close()
    assert not double.LAUNCHED


def test_actions_of_the_wrong_shape_are_invalid_actions_in_both_modes(api):
    for mode in ("keyframe", "joint_velocity"):
        env = make_suite("rlbench", "rlbench10").make_env(settings(options=backend.RLBenchOptions(action_mode=mode)))
        try:
            env.reset(seed=1)
            task = env._task
            for length in (7, 9):
                with pytest.raises(double.InvalidActionError, match="Expected the action shape"):
                    task.step(np.r_[0.2, 0.0, 1.0, 0, 0, 0, 1, 1.0, 0.0][:length])
            _, _, success, truncated, info = env.step(np.zeros(7))  # rlmtl refuses it before RLBench sees it
            assert (success, truncated, info["failure"]) == (False, True, "InvalidActionError")
        finally:
            env.close()


def test_a_scene_that_cannot_be_placed_is_a_scene_reset_error(api):
    env = make_suite("rlbench", "rlbench10").make_env(settings())
    try:
        env._task.placement_failure_rate = 1.0
        with pytest.raises(SceneResetError, match="reach_target scene 5: TaskEnvironmentError: Could not place"):
            env.reset(seed=5)
    finally:
        env.close()


def test_a_live_demo_is_the_scene_of_its_seed_or_a_failed_attempt(api):
    env = make_suite("rlbench", "rlbench10").make_env(settings())
    try:
        np.random.seed(7)
        seeded = np.random.get_state()
        demo = env.live_demo(7)
        assert backend._same_generator_state(demo.random_seed, seeded)
        env._task.demo_failures, attempts = 1, env._task.demo_attempts
        # RLBench would retry from wherever the generator stands and return a demo of another scene
        assert env.live_demo(7) is None and env._task.demo_attempts == attempts + 1
        again = env.live_demo(7)
        assert backend._same_generator_state(again.random_seed, seeded)
        np.testing.assert_array_equal(again[-1].gripper_pose[:3], demo[-1].gripper_pose[:3])
        env._task.placement_failure_rate = 1.0  # RLBench's reset inside get_demos is outside its try
        assert env.live_demo(8) is None
    finally:
        env.close()


def test_a_demo_recorded_in_another_scene_is_refused(api, monkeypatch):
    env = make_suite("rlbench", "rlbench10").make_env(settings())
    real = env._task.get_demos

    def drifted(*args, **kwargs):
        (demo,) = real(*args, **kwargs)
        np.random.seed(99)
        demo.random_seed = np.random.get_state()
        return [demo]

    monkeypatch.setattr(env._task, "get_demos", drifted)
    try:
        with pytest.raises(SceneResetError, match="another scene"):
            env.live_demo(7)
    finally:
        env.close()


# ---------------------------------------------------------------- evaluation in worker processes


@pytest.fixture(scope="module")
def rlbench_run(tmp_path_factory):
    """A 4-step run on an imported 3-task RLBench dataset (no simulator needed to train)."""
    tmp = tmp_path_factory.mktemp("rlbench_run")
    for task in TASKS:
        write_rlbench_dataset(tmp / "data", task, "peract", {0: 2}, cameras=("front",), size=8)
    config = {
        "name": "rlb",
        "out_dir": str(tmp / "runs"),
        "env": {"backend": "rlbench", "suite": "rlbench10", "tasks": TASKS, "cameras": ["front"], "image_size": 8},
        "data": {"demos_per_task": 2, "cache_dir": str(tmp / "cache"), "workers": 1},
        "agent": {"obs_keys": ["state", "rgb_front"], "hidden_dim": 16, "num_layers": 1, "image_channels": [8, 8]},
        "train": {"steps": 2, "batch_per_task": 2, "log_every": 1, "checkpoint_every": 2, "warmup_steps": 1},
        "eval": {"max_episode_retries": 1, "episode_timeout_s": 120},
    }
    path = tmp / "rlbench.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["import-rlbench", str(tmp / "data"), str(path), "--no-progress"]) == 0
    assert main(["train", str(path), "--no-progress"]) == 0
    return tmp / "runs" / "rlb"


def events(log) -> dict[int, list[str]]:
    by_pid: dict[int, list[str]] = {}
    for line in log.read_text().splitlines():
        pid, event = line.split(" ", 1)
        by_pid.setdefault(int(pid), []).append(event)
    return by_pid


@pytest.mark.parametrize("workers", [1, 2])
def test_evaluation_runs_one_simulator_per_worker_switching_tasks(rlbench_run, tmp_path, monkeypatch, capsys, workers):
    log = tmp_path / "double.log"
    monkeypatch.setenv("RLMTL_PLUGINS", "rlbench_double_plugin")
    monkeypatch.setenv("RLBENCH_DOUBLE_LOG", str(log))
    out = tmp_path / "out"
    out.mkdir()
    assert main(["eval", str(rlbench_run), "--episodes", "3", "--workers", str(workers), "--out", str(out), "--no-progress"]) == 0
    result = json.loads((out / "eval.json").read_text())
    assert all(row["errors"] == 0 and row["episodes"] == 3 for row in result["per_task"].values())
    # imported with the generator's default renderer, evaluated with the config's: one warning naming both
    warnings = [line for line in capsys.readouterr().err.splitlines() if "rendered with" in line]
    assert len(warnings) == 1 and "'opengl3' but evaluation uses 'opengl'" in warnings[0], warnings
    by_pid = events(log)
    assert 1 <= len(by_pid) <= workers
    for pid, happened in by_pid.items():
        counts = Counter(event.split()[0] for event in happened)
        assert counts["launch"] == 1 and counts["shutdown"] == 1, (pid, happened)  # one simulator, shut down at exit
        assert happened[-1] == "shutdown"
        switches = [event for event in happened if event.startswith("get_task")]
        assert len(switches) <= len(TASKS) + 1, happened  # a worker stays on its task until its episodes run out


def test_an_episode_whose_scene_cannot_be_placed_is_retried_then_counted_as_an_error(rlbench_run, tmp_path, monkeypatch):
    log = tmp_path / "double.log"
    monkeypatch.setenv("RLMTL_PLUGINS", "rlbench_double_plugin")
    monkeypatch.setenv("RLBENCH_DOUBLE_LOG", str(log))
    monkeypatch.setenv("RLBENCH_DOUBLE_PLACEMENT_FAILURE_RATE", "1")
    out = tmp_path / "out"
    out.mkdir()
    assert main(["eval", str(rlbench_run), "--episodes", "1", "--workers", "1", "--out", str(out), "--no-progress"]) == 6
    result = json.loads((out / "eval.json").read_text())
    for row in result["per_task"].values():
        assert row["errors"] == 1 and row["episodes"] == 0
    for episode in result["episodes"]:
        assert episode["attempts"] == 2 and "SceneResetError: " in episode["error"] and "TaskEnvironmentError" in episode["error"]
    for pid, happened in events(log).items():  # every replaced worker shut its simulator down first
        assert Counter(e.split()[0] for e in happened)["shutdown"] == 1 and happened[-1] == "shutdown", (pid, happened)


def test_live_demo_collection_retries_a_failed_demo_with_the_next_scene(api, tmp_path, monkeypatch):
    import h5py

    from rlmtl.config import load_config
    from rlmtl.data.collect import collect

    monkeypatch.setenv("RLMTL_PLUGINS", "rlbench_double_plugin")
    monkeypatch.setenv("RLBENCH_DOUBLE_DEMO_FAILURES", "1")  # each worker's first try of each task fails
    log = tmp_path / "double.log"
    monkeypatch.setenv("RLBENCH_DOUBLE_LOG", str(log))
    config_path = tmp_path / "rlbench.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "env": {"backend": "rlbench", "suite": "rlbench10", "tasks": TASKS[:2], "cameras": ["front"], "image_size": 8},
                "data": {"demos_per_task": 2, "cache_dir": str(tmp_path / "data"), "workers": 1},
                "agent": {"obs_keys": ["state", "rgb_front"]},
            }
        )
    )
    path = collect(load_config(config_path), progress=False)
    with h5py.File(path, "r") as handle:
        for task in TASKS[:2]:
            group = handle[f"data/{task}"]
            kept = sorted(int(group[name].attrs["attempt"]) for name in group)
            assert group.attrs["num_demos"] == 2 and 0 not in kept, kept  # attempt 0's demo failed: not kept
    happened = [event for events_of in events(log).values() for event in events_of]
    assert Counter(e.split()[0] for e in happened)["launch"] == 1  # one simulator for both tasks
