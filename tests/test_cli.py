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
    for command in ("collect", "train", "eval", "run", "compare", "report", "list", "config"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0


def test_list_and_config_show_parameters_and_options(capsys):
    assert main(["list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    famo = {row["name"]: row for row in listing["weightings"]["famo"]["parameters"]}
    assert list(famo) == ["w_lr", "gamma", "min_losses"] and listing["weightings"]["famo"]["needs"] == ["post_step_losses"]
    assert famo["w_lr"]["type"] == "float" and famo["w_lr"]["default"] == 0.025 and "Adam" in famo["w_lr"]["help"]
    assert famo["min_losses"]["type"] == "float | Sequence[float]"
    assert listing["weightings"]["hydalearn"]["parameters"][3] == {
        "name": "lr",
        "type": "float | None",
        "default": None,
        "help": 'eta of the "sgd" lookahead; None = the optimizer\'s current learning rate.',
    }
    assert listing["weightings"]["uniform"]["parameters"] == []
    assert [row["name"] for row in listing["backend_options"]["metaworld"]] == ["camera_fovy"]
    assert [row["name"] for row in listing["backend_options"]["rlbench"]] == ["action_mode", "variation", "render_mode"]
    assert "reach-v3" in listing["backends"]["metaworld"]["mt10"]
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "  famo: post_step_losses; w_lr: float = 0.025, gamma: float = 0.01, min_losses: float | Sequence[float] = 0.0" in out
    assert "backend rlbench options (env.options): action_mode: str = 'keyframe', variation: int = 0" in out
    assert main(["config"]) == 0
    lines = capsys.readouterr().out.splitlines()
    w_lr = [line for line in lines if line.strip().startswith("weighting.params.w_lr ")]
    assert len(w_lr) == 1 and "float = 0.025" in w_lr[0] and "learning rate of the task logits' Adam" in w_lr[0]
    assert any(line.strip().startswith("env.options.variation ") and "int = 0" in line for line in lines)


def test_misspelt_plugin_keys_are_one_line_errors_at_load(tiny_config_file, capsys):
    config = str(tiny_config_file())
    assert main(["train", config, "--no-progress", "weighting.name=famo", "weighting.params.bogus=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"rlmtl train: error: {config} + overrides: 'weighting.params.bogus' is not a parameter of weighting 'famo' (its parameters: w_lr, gamma, min_losses)"
    ]
    assert main(["collect", config, "--no-progress", "env.options.action_mode=keyframe"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"rlmtl collect: error: {config} + overrides: 'env.options.action_mode' is not an option of backend 'metaworld' (its options: camera_fovy)"
    ]


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
    from rlmtl.config import load_config
    from rlmtl.data.collect import collect

    collect(load_config(config), progress=False)
    assert main(["train", config, "--no-progress", "weighting.name=hydalearn"]) == 2
    assert "primary tasks" in capsys.readouterr().err
    assert main(["train", config, "--no-progress", "weighting.name=famo", "weighting.params.gama=1"]) == 2
    assert "gama" in capsys.readouterr().err
    assert main(["train", config, "--no-progress", "weighting.name=famous"]) == 2
    assert "unknown weighting 'famous'" in capsys.readouterr().err
