"""The command line end to end, and its answers to bad input (one line, a distinct exit code, nothing left):
2 for bad input, 3 for an unusable checkpoint (see rlmtl/errors.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rlmtl.cli import main

ROOT = Path(__file__).resolve().parents[1]


def rlmtl(*args, cwd=None):
    """Run the real console entry point in a subprocess."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, "-m", "rlmtl", *map(str, args)], capture_output=True, text=True, cwd=cwd or ROOT, env=env, timeout=600
    )


def error_line(result):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines, result
    return lines[-1]


@pytest.mark.slow
def test_collect_train_resume_eval_report(tiny_config_file, tmp_path):
    config = tiny_config_file()
    assert rlmtl("collect", config, "--no-progress").returncode == 0
    first = rlmtl("train", config, "--no-progress", "--stop-after-steps", "20")
    assert first.returncode == 0, first.stderr
    run = tmp_path / "runs" / "tiny"
    assert (run / "checkpoints" / "last").read_text().strip() == "step_00000020.pt"
    resumed = rlmtl("train", config, "--no-progress", "--resume")
    assert resumed.returncode == 0 and "resumed" in resumed.stderr
    evaluated = rlmtl("eval", run, "--episodes", "2", "--video", "--no-progress")
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads((run / "eval.json").read_text())
    assert result["step"] == 40 and set(result["per_task"]) == {"reach-v3", "drawer-close-v3"}
    assert result["overall"]["episodes"] == 4 and len(result["episodes"]) == 4
    assert "| reach-v3 |" in (run / "eval.md").read_text()
    import imageio.v2 as imageio

    for task in ("reach-v3", "drawer-close-v3"):
        frames = np.stack(imageio.mimread(run / "videos" / f"{task}.gif"))
        assert frames.shape[0] > 5 and frames.std() > 10  # not blank
    assert rlmtl("report", run).returncode == 0
    assert (run / "report.md").is_file() and (run / "plots" / "success_per_task.png").stat().st_size > 1000


@pytest.mark.slow
def test_run_main_job_with_images(tiny_config_file, tmp_path):
    config = tiny_config_file(
        env={"tasks": ["reach-v3", "drawer-close-v3"], "cameras": ["corner"], "image_size": 32, "max_episode_steps": 100},
        agent={"obs_keys": ["proprio", "rgb_corner"], "hidden_dim": 32, "image_channels": [8, 8]},
        data={"demos_per_task": 2},
        train={"steps": 10, "checkpoint_every": 10},
    )
    result = rlmtl("run", config, "--no-progress")
    assert result.returncode == 0, result.stderr
    run = tmp_path / "runs" / "tiny"
    report = (run / "report.md").read_text()
    assert "| drawer-close-v3 |" in report and "collect" in report
    assert json.loads((run / "eval.json").read_text())["overall"]["episodes"] == 4


def test_list_and_help(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "metaworld" in out and "reach-v3" in out and "uniform" in out and "mlp" in out
    for command in ("collect", "train", "eval", "run", "report", "list", "config"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0


def test_missing_dataset(tiny_config_file, capsys):
    config = tiny_config_file()
    assert main(["train", str(config), "--no-progress"]) == 2
    assert "dataset not found" in capsys.readouterr().err


def test_corrupt_dataset_keeps_the_file(tiny_config_file, tmp_path, capsys):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    config = tiny_config_file(data={"path": str(bad)})
    assert main(["train", str(config), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.h5" in err[0]
    assert bad.read_bytes().startswith(b"\x89HDF") and not (tmp_path / "runs" / "tiny").exists()


def test_unknown_task(tiny_config_file, tmp_path):
    result = rlmtl("collect", tiny_config_file(env={"tasks": ["fly-v3"]}))
    assert result.returncode == 2 and "unknown task 'fly-v3'" in error_line(result)
    assert not (tmp_path / "data").exists() or not list((tmp_path / "data").iterdir())


def test_unknown_config_key(tiny_config_file):
    result = rlmtl("train", tiny_config_file(), "train.stepz=3")
    assert result.returncode == 2 and "'train.stepz'" in error_line(result)
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_unwritable_run_folder_as_user(tiny_config_file, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    config = tiny_config_file(out_dir=str(locked / "runs"))
    assert rlmtl("collect", config).returncode == 0
    result = rlmtl("train", config)
    assert result.returncode == 2 and "not writable" in error_line(result)


def test_unwritable_run_folder(tiny_config_file, tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the run folder's parent should be")
    config = tiny_config_file(out_dir=str(blocker / "runs"))
    assert rlmtl("collect", config).returncode == 0
    result = rlmtl("train", config)
    assert result.returncode == 2 and "not writable" in error_line(result) and "blocker" in error_line(result)
    assert blocker.read_text().startswith("a file")


def test_eval_bad_checkpoint_path(tmp_path):
    result = rlmtl("eval", tmp_path / "nothing-here")
    assert result.returncode == 3 and "nothing-here" in error_line(result)  # EXIT_CHECKPOINT


def test_weighting_config_errors_are_one_line(tiny_config_file, capsys):
    config = str(tiny_config_file())
    from rlmtl.collect import collect
    from rlmtl.config import load_config

    collect(load_config(config), progress=False)
    assert main(["train", config, "--no-progress", "weighting.name=hydalearn"]) == 2
    assert "primary tasks" in capsys.readouterr().err
    assert main(["train", config, "--no-progress", "weighting.name=famo", "weighting.params.gama=1"]) == 2
    assert "gama" in capsys.readouterr().err
    assert main(["train", config, "--no-progress", "weighting.name=famous"]) == 2
    assert "unknown weighting 'famous'" in capsys.readouterr().err
