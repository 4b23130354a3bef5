"""Evaluation that survives crashing and hanging workers, resumes after SIGKILL, and shards over
ranks; collection that survives them through the same pool.

Faults are injected for real by `fault_plugin` (os._exit, a segmentation fault, an endless sleep)
inside spawn-started workers, which load the plugin through RLMTL_PLUGINS.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import fault_plugin
import pytest
from process_helpers import run_torchrun

from rlmtl.envs import scene_seed
from rlmtl.evaluation.episode_log import EpisodeLog, read_log
from rlmtl.evaluation.evaluate import evaluate_checkpoint
from rlmtl.evaluation.settings import EvalSettings

TESTS = Path(__file__).parent / "helpers"


def expected_outcome(task_index: int, episode: int) -> tuple[bool, str]:
    """What the toy env does with this episode's scene (see fault_plugin)."""
    kind = scene_seed("eval", 0, task_index, episode) % 4
    return kind == 0, {0: "", 1: "ik_error"}.get(kind, "step_limit")


def check_every_episode_once(result: dict, episodes: int) -> None:
    rows = [(row["task"], row["episode"]) for row in result["episodes"]]
    assert sorted(rows) == sorted((task, e) for task in fault_plugin.TASKS for e in range(episodes))
    for row in result["episodes"]:
        assert "error" not in row, row
        assert (row["success"], row["failure"]) == expected_outcome(fault_plugin.TASKS.index(row["task"]), row["episode"])


@pytest.fixture
def plugin_env(monkeypatch, tmp_path):
    monkeypatch.setenv("RLMTL_PLUGINS", "fault_plugin")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))

    def faults(items: list[dict], **extra) -> Path:
        path = fault_plugin.write_faults(tmp_path / "faults.json", items, **extra)
        monkeypatch.setenv("RLMTL_TEST_FAULTS", str(path))
        return path

    return faults


def fault(task: str, episode: int, mode: str, times: int, at: str = "step") -> dict:
    index = fault_plugin.TASKS.index(task)
    return {"task": task, "seed": scene_seed("eval", 0, index, episode), "mode": mode, "times": times, "at": at}


def test_crashed_and_hung_workers_are_replaced_and_each_episode_counted_once(plugin_env, tmp_path):
    plugin_env(
        [fault("alpha", 1, "exit", 1), fault("beta", 2, "segv", 2, at="reset"), fault("gamma", 0, "hang", 1), fault("gamma", 3, "raise", 1)]
    )
    run = fault_plugin.make_toy_run(tmp_path / "run")
    settings = EvalSettings(episodes_per_task=4, workers=2, progress=False, episode_timeout_s=8, max_episode_retries=2)
    result = evaluate_checkpoint(run, settings, out=run)
    markers = sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "markers").iterdir())
    assert len(markers) == 5 and {m.split("-")[-1] for m in markers} == {"exit", "segv", "hang", "raise"}  # every fault fired
    check_every_episode_once(result, 4)
    assert result["overall"]["errors"] == 0 and result["overall"]["episodes"] == 12
    # failures by kind, per task, from the env's info["failure"]
    for index, task in enumerate(fault_plugin.TASKS):
        kinds = [expected_outcome(index, e)[1] for e in range(4) if not expected_outcome(index, e)[0]]
        assert result["per_task"][task]["failures"] == {k: kinds.count(k) for k in sorted(set(kinds))}
    log = list(read_log(run / "eval_episodes.jsonl"))
    assert len(log) == 12 and max(r["attempts"] for r in log) == 3  # beta 2 crashed twice, ran a third time
    # each fault is charged to its own episode; the episodes batched with it reran at their attempt
    attempts = {(r["task"], r["episode"]): r["attempts"] for r in log}
    faulted = {("alpha", 1): 2, ("beta", 2): 3, ("gamma", 0): 2, ("gamma", 3): 2}
    assert attempts == {(task, e): faulted.get((task, e), 1) for task in fault_plugin.TASKS for e in range(4)}


def run_cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlmtl", "eval", *args], capture_output=True, text=True, timeout=300, **kwargs)


def test_an_episode_failing_every_rerun_is_an_error_not_a_policy_failure(plugin_env, tmp_path):
    plugin_env([fault("beta", 0, "exit", 99)])
    run = fault_plugin.make_toy_run(tmp_path / "run", max_episode_retries=1)
    done = run_cli(str(run), "--no-progress")
    assert done.returncode == 6, done.stderr
    assert "beta episode 0" in done.stderr and "NOT in the success rates" in done.stderr
    result = json.loads((run / "eval.json").read_text())
    beta = result["per_task"]["beta"]
    assert beta["errors"] == 1 and beta["episodes"] == 3 and beta["episodes_requested"] == 4
    ran = [e for e in range(1, 4)]
    assert beta["successes"] == sum(expected_outcome(1, e)[0] for e in ran) and beta["success_rate"] == beta["successes"] / 3
    assert len(list((tmp_path / "markers").iterdir())) == 2  # first run + one rerun
    assert [row for row in result["episodes"] if "error" in row][0]["attempts"] == 2
    assert "ended in an error" in (run / "eval.md").read_text()


def test_sigkilled_evaluation_resumes_without_redoing_finished_episodes(plugin_env, tmp_path):
    faults = plugin_env([], step_sleep_s=0.08)
    run = fault_plugin.make_toy_run(tmp_path / "run", episodes_per_task=8)
    log_path = run / "eval_episodes.jsonl"
    process = subprocess.Popen([sys.executable, "-m", "rlmtl", "eval", str(run), "--no-progress"], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not log_path.is_file() or len(log_path.read_bytes().splitlines()) < 8):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = len(list(read_log(log_path)))
    assert 8 <= finished < 24 and not (run / "eval.json").exists()
    with open(log_path, "ab") as handle:  # a write torn by the crash
        handle.write(b'{"checkpoint": "abc", "task": "al')
    time.sleep(1.0)  # orphaned workers notice the closed pipe and exit
    count_file = Path(json.loads(faults.read_text())["count_file"])
    before = len(count_file.read_text().splitlines())
    refused = run_cli(str(run), "--no-progress")  # a log in the folder: not counted unless asked
    assert refused.returncode == 4 and "--resume" in refused.stderr and "eval_episodes.jsonl" in refused.stderr
    done = run_cli(str(run), "--no-progress", "--resume")
    assert done.returncode == 0, done.stderr
    assert f"{finished} of 24 episodes taken from the logs" in done.stderr
    executed = len(count_file.read_text().splitlines()) - before
    assert executed == 24 - finished
    result = json.loads((run / "eval.json").read_text())
    check_every_episode_once(result, 8)
    assert len(list(read_log(log_path))) == 24
    again = run_cli(str(run), "--no-progress", "--resume")  # everything logged: nothing runs
    assert again.returncode == 0 and len(count_file.read_text().splitlines()) - before == executed
    assert json.loads((run / "eval.json").read_text())["per_task"] == result["per_task"]


def test_episode_log_cuts_a_torn_tail_before_appending(tmp_path):
    path = tmp_path / "eval_episodes.jsonl"
    record = {"checkpoint": "c", "settings": "s", "task": "a", "episode": 0, "scene_seed": 1, "rlmtl": "v"}
    record.update(success=True, steps=3, failure="", error="")
    path.write_bytes(json.dumps(record).encode() + b"\n" + b'{"checkpoint": "c", "sett')
    assert [r["episode"] for r in read_log(path)] == [0]
    with EpisodeLog(path) as log:
        log.append({**record, "episode": 1})
    assert [r["episode"] for r in read_log(path)] == [0, 1]
    assert path.read_bytes().count(b"\n") == 2


def test_sharded_evaluation_under_torchrun_equals_one_process(plugin_env, tmp_path):
    plugin_env([])
    run = fault_plugin.make_toy_run(tmp_path / "run", episodes_per_task=5, workers=1)
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    single.mkdir()
    sharded.mkdir()
    assert run_cli(str(run), "--out", str(single), "--no-progress").returncode == 0
    done = run_torchrun(2, "eval", str(run), "--out", str(sharded), "--no-progress", timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    one = json.loads((single / "eval.json").read_text())
    two = json.loads((sharded / "eval.json").read_text())
    assert two["per_task"] == one["per_task"] and two["episodes"] == one["episodes"] and two["overall"] == one["overall"]
    ranks = [list(read_log(sharded / f"eval_episodes.rank{r}.jsonl")) for r in (0, 1)]
    assert len(ranks[0]) + len(ranks[1]) == 15 and ranks[0] and ranks[1]  # both ranks did a share
    assert {(r["task"], r["episode"]) for r in ranks[0]}.isdisjoint({(r["task"], r["episode"]) for r in ranks[1]})


def _toy_collection(tmp_path: Path, name: str) -> Path:
    from rlmtl.config import config_from_dict
    from rlmtl.data.collect import collect

    config = config_from_dict(
        {
            "env": {"backend": "faulty", "suite": "toy", "tasks": ["alpha"]},
            "data": {
                "demos_per_task": 2,
                "workers": 2,
                "cache_dir": str(tmp_path / name),
                "max_attempts_per_demo": 20.0,
                "attempt_timeout_s": 5.0,
                "max_attempt_retries": 1,
            },
        }
    )
    return collect(config, progress=False)


def test_collection_survives_crashed_and_hung_workers_and_keeps_the_same_demos(plugin_env, tmp_path):
    from rlmtl.data.dataset import load_dataset

    clean = load_dataset(_toy_collection(tmp_path, "clean"), ["alpha"], ["state"]).per_task[0]
    # the expert's demo succeeds where seed % 4 == 0: crash the first such attempt, hang the second
    solved = [a for a in range(40) if scene_seed("train", 0, 0, a) % 4 == 0][:2]
    seeds = [scene_seed("train", 0, 0, a) for a in solved]
    faults = [
        {"task": "alpha", "seed": seeds[0], "mode": "segv", "times": 1, "at": "step"},
        {"task": "alpha", "seed": seeds[1], "mode": "hang", "times": 1, "at": "reset"},
    ]
    plugin_env(faults)
    faulty = load_dataset(_toy_collection(tmp_path, "faulty"), ["alpha"], ["state"]).per_task[0]
    assert sorted(p.name.rsplit("-", 2)[1] for p in (tmp_path / "markers").iterdir()) == ["hang", "segv"]  # both faults fired
    assert faulty.num_demos == clean.num_demos == 2
    assert (faulty.observations["state"] == clean.observations["state"]).all() and (faulty.actions == clean.actions).all()


def test_collection_counts_an_attempt_failing_every_rerun_as_failed(plugin_env, tmp_path, capsys):
    from rlmtl.data.dataset import read_attrs

    seed = next(scene_seed("train", 0, 0, a) for a in range(40) if scene_seed("train", 0, 0, a) % 4 == 0)
    plugin_env([{"task": "alpha", "seed": seed, "mode": "exit", "times": 99, "at": "reset"}])
    attrs = read_attrs(_toy_collection(tmp_path, "always"))
    assert attrs["tasks"] == ["alpha"] and not attrs["shortfall"]  # later attempts made up for it
    assert "failed 2 times" in capsys.readouterr().err


def test_a_checkpoint_whose_shapes_do_not_fit_the_env_is_refused_before_any_rollout(plugin_env, tmp_path):
    from rlmtl.build import agent_meta, build_agent
    from rlmtl.config import config_from_dict
    from rlmtl.training.checkpoint import save_checkpoint, update_last_pointer

    faults = plugin_env([])
    config = config_from_dict({"env": {"backend": "faulty", "suite": "toy"}, "agent": {"hidden_dim": 16, "num_layers": 1}})
    meta = agent_meta(config, fault_plugin.TASKS, {"state": {"shape": [5], "dtype": "float32"}}, 2)  # the toy env gives 4
    run = tmp_path / "run"
    path = save_checkpoint(run / "checkpoints" / "step_00000001.pt", {"meta": meta, "step": 1, "model": build_agent(meta).state_dict()})
    update_last_pointer(run / "checkpoints", path)
    done = run_cli(str(run), "--no-progress", "--episodes", "1")
    assert done.returncode == 3, done.stderr
    assert "'state' of shape (5,) but toy produces (4,)" in done.stderr.strip().splitlines()[-1]
    count_file = Path(json.loads(faults.read_text())["count_file"])
    assert not count_file.exists()  # no episode was started


@pytest.mark.parametrize(("flag", "value"), [("--episodes", "-3"), ("--episodes", "0"), ("--episodes", "two"), ("--workers", "-1")])
def test_episode_and_worker_counts_are_validated(flag, value, tmp_path):
    done = run_cli(str(tmp_path), flag, value)
    assert done.returncode == 2 and flag in done.stderr


def test_an_evaluation_reads_its_own_copy_of_a_checkpoint_pruned_under_it(plugin_env, tmp_path):
    """Training may prune the checkpoint being evaluated: a worker replaced after a crash must still
    load the same weights (it used to fail to start, on every rerun)."""
    run = fault_plugin.make_toy_run(tmp_path / "run")
    checkpoint = run / "checkpoints" / "step_00000001.pt"
    plugin_env([fault("alpha", 0, "exit", 1)], delete_at_reset=str(checkpoint))
    done = run_cli(str(checkpoint), "--out", str(run), "--no-progress")
    assert done.returncode == 0, done.stderr[-2000:]
    assert not checkpoint.exists()  # pruned while the episodes ran
    check_every_episode_once(json.loads((run / "eval.json").read_text()), 4)


def _toy_collect_config(tmp_path: Path, name: str, demos: int = 2) -> Path:
    path = tmp_path / f"{name}.yaml"
    data = {
        "env": {"backend": "faulty", "suite": "toy", "tasks": ["alpha"]},
        "data": {"demos_per_task": demos, "workers": 2, "cache_dir": str(tmp_path / name), "max_attempts_per_demo": 20.0},
    }
    path.write_text(json.dumps(data))
    return path


def _processes_with(marker: str) -> list[int]:
    """Pids of live processes whose environment mentions `marker` (the test's fault file)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker.encode() in (entry / "environ").read_bytes() and (entry / "stat").read_text().split()[2] != "Z":
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.parametrize("kill", [signal.SIGKILL, signal.SIGTERM])
def test_killing_collection_ends_its_workers_even_mid_job(plugin_env, tmp_path, kill):
    seed = next(scene_seed("train", 0, 0, a) for a in range(40) if scene_seed("train", 0, 0, a) % 4 == 0)
    faults = plugin_env([{"task": "alpha", "seed": seed, "mode": "hang", "times": 1, "at": "reset"}])
    config = _toy_collect_config(tmp_path, "killed")
    parent = subprocess.Popen([sys.executable, "-m", "rlmtl", "collect", str(config), "--no-progress"], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((tmp_path / "markers").glob("*hang*")):
        time.sleep(0.05)
    assert _processes_with(str(faults)), "no worker was running"
    parent.send_signal(kill)
    parent.wait(timeout=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _processes_with(str(faults)):
        time.sleep(0.1)
    assert not _processes_with(str(faults)), "workers outlived the collection"


def test_a_collection_killed_half_way_resumes_from_its_finished_attempts(plugin_env, tmp_path):
    from rlmtl.config import load_config
    from rlmtl.data.collect import collect
    from rlmtl.data.dataset import load_dataset

    faults = plugin_env([], step_sleep_s=0.05)
    count_file = Path(json.loads(faults.read_text())["count_file"])
    clean_config = load_config(_toy_collect_config(tmp_path, "clean", demos=5))
    clean = load_dataset(collect(clean_config, progress=False), ["alpha"], ["state"]).per_task[0]
    total = len(count_file.read_text().splitlines())
    config = _toy_collect_config(tmp_path, "resumed", demos=5)
    process = subprocess.Popen([sys.executable, "-m", "rlmtl", "collect", str(config), "--no-progress"], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120

    def journals() -> list[Path]:
        # finished entries only: a kill can leave an atomic write's hidden temporary file, which resume ignores
        return [p for p in (tmp_path / "resumed").glob(".*.partial/*") if p.suffix in (".npz", ".failed") and not p.name.startswith(".")]

    while time.monotonic() < deadline and len(journals()) < 6:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    journaled = len(journals())
    assert journaled >= 6 and not list((tmp_path / "resumed").glob("*.h5"))
    before = len(count_file.read_text().splitlines())
    done = subprocess.run(
        [sys.executable, "-m", "rlmtl", "collect", str(config), "--no-progress"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resuming from {journaled} finished attempts" in done.stderr
    executed = len(count_file.read_text().splitlines()) - before
    assert executed <= total - journaled  # the journaled attempts did not run again
    resumed = load_dataset(Path(done.stdout.strip()), ["alpha"], ["state"]).per_task[0]
    assert (resumed.actions == clean.actions).all() and (resumed.observations["state"] == clean.observations["state"]).all()
    assert not list((tmp_path / "resumed").glob(".*.partial"))  # the journal is gone once the dataset is written
