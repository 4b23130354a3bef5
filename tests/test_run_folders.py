"""Run folders belong to one run: a lock, no writing into folders rlmtl cannot account for, no
output outside the folder asked for, never overwriting a file rlmtl did not write."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from synthetic_runs import write_config, write_tiny_dataset

from rlmtl.cli import main
from rlmtl.config import load_config
from rlmtl.errors import EXIT_OUTPUT, EXIT_USER_ERROR, CheckpointError, ConfigError, OutputError, RlmtlError
from rlmtl.folder_lock import LOCK_NAME, FolderLock
from rlmtl.training.trainer import Trainer, train


@pytest.fixture
def folder(tmp_path):
    write_tiny_dataset(tmp_path / "data.h5")
    return tmp_path


def test_two_trainings_cannot_share_a_run_folder(folder):
    config = load_config(write_config(folder, "shared", "uniform", steps=4))
    first = Trainer(config, progress=False)
    with pytest.raises(OutputError, match=rf"runs/shared: in use by pid {os.getpid()} on .*\(rlmtl train, since "):
        Trainer(config, resume=True, progress=False)
    first.run()  # releases the folder
    assert Trainer(config, resume=True, progress=False).run().step == 4


def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_message(folder, capsys):
    config = load_config(write_config(folder, "stale", "uniform", steps=2))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    config.run_dir.mkdir(parents=True)
    (config.run_dir / LOCK_NAME).write_text(json.dumps({"pid": int(dead), "host": "h", "command": "rlmtl train", "since": "then"}))
    train(config, progress=False)
    assert f"took over the lock of {config.run_dir} from pid {dead}" in capsys.readouterr().err
    assert (config.run_dir / LOCK_NAME).read_text() == ""  # released: no holder named


def test_a_folder_with_files_but_no_run_is_refused_and_left_alone(folder):
    config = load_config(write_config(folder, "foreign", "uniform", steps=2))
    config.run_dir.mkdir(parents=True)
    (config.run_dir / "notes.txt").write_text("mine")
    (config.run_dir / "checkpoints").mkdir()
    (config.run_dir / "checkpoints" / "step_00000002.pt").write_text("not rlmtl's")
    with pytest.raises(RlmtlError, match=r"holds checkpoints, notes.txt but no checkpoints/last"):
        Trainer(config, progress=False)
    assert sorted(p.name for p in config.run_dir.iterdir()) == [LOCK_NAME, "checkpoints", "notes.txt"]
    assert (config.run_dir / "checkpoints" / "step_00000002.pt").read_text() == "not rlmtl's"


@pytest.mark.parametrize("content", [b"\xff\xfe\x00garbage", b"../../outside.pt\n", b"step_1.pt/../../x.pt\n"])
def test_a_bad_last_pointer_is_a_one_line_checkpoint_error(folder, content):
    config = load_config(write_config(folder, "pointer", "uniform", steps=2))
    (config.run_dir / "checkpoints").mkdir(parents=True)
    (config.run_dir / "checkpoints" / "last").write_bytes(content)
    with pytest.raises(
        CheckpointError, match=r"checkpoints/last: (not a readable checkpoint pointer|names .* not a checkpoint file of this folder)"
    ):
        Trainer(config, resume=True, progress=False)


@pytest.mark.parametrize("name", ["../escape", "/tmp/absolute", "a/b", "..", "."])
def test_a_run_name_cannot_leave_out_dir(name):
    with pytest.raises(ConfigError, match=r"'name' must be a plain folder name"):
        load_config(None, [f"name={name}"])


def test_evaluating_a_checkpoint_outside_a_run_folder_needs_out(folder, capsys):
    config = load_config(write_config(folder, "bare", "uniform", steps=2))
    result = train(config, progress=False)
    models = folder / "dir" / "models"
    models.mkdir(parents=True)
    (models / "model.pt").write_bytes(result.last_checkpoint.read_bytes())
    assert main(["eval", str(models / "model.pt"), "--no-progress"]) == EXIT_USER_ERROR
    assert "give --out" in capsys.readouterr().err
    assert not (folder / "dir" / "eval.json").exists() and not (models / "eval.json").exists()


def test_evaluation_into_a_folder_another_rlmtl_process_holds_is_refused(folder, capsys):
    config = load_config(write_config(folder, "busy", "uniform", steps=2))
    run = train(config, progress=False).run_dir
    with FolderLock(run, "rlmtl train"):
        assert main(["eval", str(run), "--no-progress", "--episodes", "1"]) == EXIT_OUTPUT
    assert "in use by pid" in capsys.readouterr().err and not (run / "eval.json").exists()


def test_collect_never_replaces_a_file_that_is_not_an_rlmtl_dataset(tiny_config_file, tmp_path):
    from rlmtl.data.collect import collect

    target = tmp_path / "precious.h5"
    target.write_text("someone else's file")
    config = load_config(tiny_config_file(data={"path": str(target)}))
    for force in (False, True):
        with pytest.raises(OutputError, match=r"precious.h5: exists and is not a readable rlmtl dataset .*not overwriting it"):
            collect(config, force=force, progress=False)
    assert target.read_text() == "someone else's file"
