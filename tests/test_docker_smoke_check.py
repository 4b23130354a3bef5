"""The in-container checks of scripts/docker_smoke.sh: eval.json shape and non-blank videos (the Docker run itself is
exercised by .ci/run through scripts/docker_smoke.sh)."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("docker_smoke_check", ROOT / "scripts" / "docker_smoke_check.py")
smoke_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(smoke_check)

TASKS = ["reach-v3", "pick-place-v3"]


def write_eval(folder: Path, tasks=TASKS, episodes=2, blank=(), errors=0) -> Path:
    """An eval folder as `rlmtl eval --video --out folder` writes it, with gifs that are blank for the tasks in `blank`."""
    import imageio.v2 as imageio

    rng = np.random.default_rng(0)
    (folder / "videos").mkdir(parents=True)
    per_task = {task: {"success_rate": 0.0, "episodes": episodes, "errors": errors} for task in tasks}
    records = [{"task": task, "episode": episode} for task in tasks for episode in range(episodes)]
    result = {"per_task": per_task, "overall": {"success_rate": 0.0, "episodes": len(records)}, "episodes": records, "videos": {}}
    for task in tasks:
        frames = np.full((8, 16, 16, 3), 90, np.uint8) if task in blank else rng.integers(0, 255, (8, 16, 16, 3), dtype=np.uint8)
        imageio.mimsave(folder / "videos" / f"{task}.gif", list(frames), format="GIF", duration=25)
        result["videos"][task] = f"videos/{task}.gif"
    (folder / "eval.json").write_text(json.dumps(result))
    return folder


def test_outputs_pass_on_two_tasks_with_rendered_videos(tmp_path):
    facts = smoke_check.check_outputs(write_eval(tmp_path), TASKS, 2)
    assert facts[0].startswith("eval.json: 2 tasks x 2 episodes") and len(facts) == 3


@pytest.mark.parametrize(
    "kwargs, expected, message",
    [
        ({"blank": ("pick-place-v3",)}, 2, "blank or too short"),
        ({"tasks": TASKS[:1]}, 2, "per_task has"),
        ({"episodes": 1}, 2, "episodes and"),
        ({"errors": 1}, 2, "errors, expected"),
    ],
)
def test_outputs_fail_with_the_reason(tmp_path, kwargs, expected, message):
    with pytest.raises(smoke_check.CheckFailed, match=message):
        smoke_check.check_outputs(write_eval(tmp_path, **kwargs), TASKS, expected)


def test_missing_eval_json_and_video_fail(tmp_path):
    with pytest.raises(smoke_check.CheckFailed, match="eval.json missing"):
        smoke_check.check_outputs(tmp_path, TASKS, 2)
    folder = write_eval(tmp_path / "run")
    (folder / "videos" / "reach-v3.gif").unlink()
    with pytest.raises(smoke_check.CheckFailed, match="video of reach-v3 missing"):
        smoke_check.check_outputs(folder, TASKS, 2)


def test_isolation_refuses_root(monkeypatch, tmp_path):
    monkeypatch.setattr(smoke_check.os, "getuid", lambda: 0)
    with pytest.raises(smoke_check.CheckFailed, match="runs as root"):
        smoke_check.check_isolation(tmp_path)


def test_main_exit_codes(tmp_path, capsys):
    assert smoke_check.main(["outputs", str(write_eval(tmp_path)), ",".join(TASKS), "2"]) == 0
    assert smoke_check.main(["outputs", str(tmp_path), "reach-v3", "2"]) == 1
    assert "FAILED" in capsys.readouterr().err
    assert smoke_check.main(["nonsense"]) == 2
