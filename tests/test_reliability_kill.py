"""Killed training (issue 8, item 1): a run SIGKILLed at any moment, a checkpoint write included,
resumes from its last complete checkpoint and ends with the parameters of an uninterrupted run;
a torn checkpoint is refused (CheckpointError naming the file, exit code 3), never loaded.

Kills are real: `rlmtl train` runs in a subprocess and gets SIGKILL, either from the test at a
seeded random moment or from itself inside a checkpoint write (kill_helpers, an RLMTL_PLUGINS
module that wraps torch.save / os.replace). Training is on the CPU with one thread, so runs are
bit-for-bit reproducible and the final checkpoints are compared with torch.equal.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_config_dict
from kill_helpers import KILL_ENV, is_step_temp

from rlmtl.config import load_config
from rlmtl.data.collect import collect
from rlmtl.errors import CheckpointError
from rlmtl.training.checkpoint import load_checkpoint, resolve_checkpoint, resolve_last, save_checkpoint, update_last_pointer

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent / "helpers"
STEPS, EVERY = 120, 10  # 12 checkpoints; log_every = checkpoint_every so metric intervals match after a resume
FINAL = f"step_{STEPS:08d}.pt"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (KILL_ENV, "RLMTL_PLUGINS")}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    return {**env, **extra}


def _train_command(config: Path, name: str, resume: bool = False) -> list[str]:
    return [sys.executable, "-m", "rlmtl", "train", str(config), "--no-progress", *(["--resume"] if resume else []), f"name={name}"]


def _train(config: Path, name: str, resume: bool = False, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(_train_command(config, name, resume), cwd=ROOT, env=_env(**env), capture_output=True, text=True, timeout=300)


def _checkpoints(workspace: dict, name: str) -> Path:
    return workspace["runs"] / name / "checkpoints"


def _step_of(checkpoint: Path) -> int:
    return int(checkpoint.stem.removeprefix("step_"))


def _final_state(workspace: dict, name: str) -> dict:
    return torch.load(_checkpoints(workspace, name) / FINAL, weights_only=True)


def _assert_same_final_state(workspace: dict, name: str) -> None:
    """The run `name` ended exactly where the uninterrupted reference run did."""
    ref, got = workspace["reference"], _final_state(workspace, name)
    assert got["step"] == ref["step"] == STEPS
    assert ref["model"].keys() == got["model"].keys()
    for key, value in ref["model"].items():
        assert torch.equal(value, got["model"][key]), f"model parameter {key} differs from the uninterrupted run"
    for index, state in ref["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, got["optimizer"]["state"][index][key]), f"optimizer state {index}.{key} differs"
    assert torch.equal(ref["sampler"]["generator"], got["sampler"]["generator"]), "batch sampler state differs"
    assert torch.equal(ref["rng"]["torch"], got["rng"]["torch"])
    metrics = [json.loads(line) for line in (workspace["runs"] / name / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(EVERY, STEPS + 1, EVERY)), "metric lines lost or duplicated by the resume"
    assert [(m["loss"], m["weight"], m["lr"]) for m in metrics] == workspace["reference_metrics"]


def _assert_resumable_after_kill(folder: Path) -> int:
    """After a kill: `last` names a complete checkpoint (not a temp file) that loads; returns its step."""
    last = resolve_last(folder)
    assert last is not None and last.name.startswith("step_") and not is_step_temp(last)
    assert resolve_checkpoint(folder.parent) == last
    assert load_checkpoint(last)["step"] == _step_of(last)
    for complete in folder.glob("step_*.pt"):  # every file that carries a checkpoint's name is whole
        load_checkpoint(complete)
    return _step_of(last)


def _resume(config: Path, workspace: dict, name: str, from_step: int) -> None:
    done = _train(config, name, resume=True)
    assert done.returncode == 0, done.stderr
    assert f"resumed {_checkpoints(workspace, name) / f'step_{from_step:08d}.pt'} at step {from_step}" in done.stderr


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A collected tiny dataset, its config, and the uninterrupted reference run (via the CLI)."""
    folder = tmp_path_factory.mktemp("kill")
    train = {"steps": STEPS, "checkpoint_every": EVERY, "log_every": EVERY, "num_threads": 1, "device": "cpu"}
    config = folder / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(folder, train=train)))
    collect(load_config(config), progress=False)
    done = _train(config, "reference")
    assert done.returncode == 0, done.stderr
    runs = folder / "runs"
    metrics = [json.loads(line) for line in (runs / "reference" / "metrics.jsonl").read_text().splitlines()]
    space = {"config": config, "runs": runs}
    space["reference"] = _final_state(space, "reference")
    space["reference_metrics"] = [(m["loss"], m["weight"], m["lr"]) for m in metrics]
    return space


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 29])
def test_sigkill_at_a_random_moment_then_resume_matches_uninterrupted(workspace, seed):
    """SIGKILL once `last` reaches a seeded random checkpoint plus a seeded random delay (which can
    land mid-step or mid-write); --resume restarts from `last` and ends bit-identical."""
    rng = random.Random(seed)
    wait_for = rng.randrange(2, 7) * EVERY  # at least 60 steps left, so the kill lands before the run ends
    delay = rng.uniform(0.0, 0.04)
    name = f"killed-{seed}"
    folder = _checkpoints(workspace, name)
    process = subprocess.Popen(_train_command(workspace["config"], name), cwd=ROOT, env=_env(), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while (last := resolve_last(folder)) is None or _step_of(last) < wait_for:
            assert process.poll() is None, f"training ended before the kill: {process.stderr.read()}"
            assert time.monotonic() < deadline, "training made no progress"
            time.sleep(0.002)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=60)
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL, f"exit code {process.returncode}: the kill came after the run finished"
    step = _assert_resumable_after_kill(folder)
    assert wait_for <= step < STEPS
    _resume(workspace["config"], workspace, name, step)
    _assert_same_final_state(workspace, name)


@pytest.mark.slow
@pytest.mark.parametrize("where,seed", [("checkpoint", 3), ("pointer", 7)])
def test_sigkill_inside_a_checkpoint_write_then_resume_matches_uninterrupted(workspace, where, seed):
    """The process kills itself while writing its n-th checkpoint (torn temp file, or complete file
    but `last` not yet moved): `last` still names checkpoint n-1, resume ends bit-identical."""
    n = random.Random(seed).randrange(2, STEPS // EVERY)
    name = f"torn-{where}"
    folder = _checkpoints(workspace, name)
    killed = _train(workspace["config"], name, RLMTL_PLUGINS="kill_helpers", **{KILL_ENV: f"{where}:{n}"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    temps = [p for p in folder.iterdir() if ".tmp-" in p.name]
    if where == "checkpoint":
        (torn,) = temps
        assert is_step_temp(torn) and torn.name.startswith(f".step_{n * EVERY:08d}.pt.tmp-")
        assert not (folder / f"step_{n * EVERY:08d}.pt").exists()
        with pytest.raises(CheckpointError, match=torn.name):
            load_checkpoint(torn)  # the temp file really is torn; only `last` decides what loads
    else:
        assert [p.name.startswith(".last.tmp-") for p in temps] == [True]
        assert load_checkpoint(folder / f"step_{n * EVERY:08d}.pt")["step"] == n * EVERY  # complete, but not yet `last`
    assert _assert_resumable_after_kill(folder) == (n - 1) * EVERY
    _resume(workspace["config"], workspace, name, (n - 1) * EVERY)
    _assert_same_final_state(workspace, name)
    assert resolve_last(folder).name == FINAL
    assert not [p for p in folder.iterdir() if ".tmp-" in p.name]  # the torn temp files were cleaned up


@pytest.mark.slow
def test_resume_refuses_a_truncated_last_checkpoint(workspace):
    """`last` naming a file torn outside rlmtl's atomic path: exit code 3 naming the file, nothing written."""
    name = "truncated"
    shutil.copytree(workspace["runs"] / "reference", workspace["runs"] / name)
    folder = _checkpoints(workspace, name)
    last = resolve_last(folder)
    os.truncate(last, last.stat().st_size // 2)
    before = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir())
    done = _train(workspace["config"], name, resume=True)
    assert done.returncode == 3, done.stderr
    assert str(last) in done.stderr and "cannot load checkpoint" in done.stderr
    assert "Traceback" not in done.stderr
    assert sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()) == before


@pytest.mark.parametrize("where", ["checkpoint", "pointer"])
def test_sigkill_inside_save_checkpoint_keeps_last_loadable(tmp_path, where):
    """Without a simulator: kill inside the 3rd of 5 writes; `last` names checkpoint 2, which loads."""
    folder = tmp_path / "checkpoints"
    done = subprocess.run(
        [sys.executable, "-m", "kill_helpers", str(folder), "5"],
        cwd=ROOT,
        env=_env(**{KILL_ENV: f"{where}:3"}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    last = resolve_last(folder)
    assert last == folder / "step_00000002.pt"
    payload = load_checkpoint(resolve_checkpoint(tmp_path))
    assert payload["step"] == 2 and torch.equal(payload["model"]["w"], torch.full((256, 256), 2.0))
    names = sorted(p.name for p in folder.iterdir() if ".tmp-" not in p.name)
    expected = ["last", "step_00000001.pt", "step_00000002.pt"] + (["step_00000003.pt"] if where == "pointer" else []) + ["written.json"]
    assert names == expected


@pytest.mark.parametrize("keep", [0, 1, 0.5, -1])
def test_truncated_checkpoint_is_refused_naming_the_file(tmp_path, keep):
    """A checkpoint cut to 0 bytes, 1 byte, half, or all but its last byte never loads."""
    folder = tmp_path / "checkpoints"
    path = save_checkpoint(folder / "step_00000001.pt", {"meta": {}, "step": 1, "model": {"w": torch.arange(4096.0)}})
    update_last_pointer(folder, path)
    size = path.stat().st_size
    length = {0: 0, 1: 1, 0.5: size // 2, -1: size - 1}[keep]
    os.truncate(path, length)
    with pytest.raises(CheckpointError, match="step_00000001.pt"):
        load_checkpoint(resolve_checkpoint(tmp_path))
