"""`rlmtl eval` as a CI gate: success bars, JUnit XML, GitHub summary, distinct exit codes."""

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from conftest import tiny_config_dict

from rlmtl.cli import main
from rlmtl.errors import EXIT_BELOW_BAR, EXIT_CHECKPOINT, EXIT_OUTPUT, EXIT_USER_ERROR
from rlmtl.evaluation.gate import check_success, github_summary, junit_xml
from rlmtl.evaluation.results import wilson_interval

ROOT = Path(__file__).resolve().parents[2]


def make_result(rates: dict[str, float], episodes: int = 4) -> dict:
    """A hand-made eval.json content with the given per-task success rates."""
    per_task = {}
    for task, rate in rates.items():
        successes = round(rate * episodes)
        per_task[task] = {
            "success_rate": rate,
            "successes": successes,
            "episodes": episodes,
            "ci95": list(wilson_interval(successes, episodes)),
            "mean_steps": 42.0,
        }
    total = sum(row["successes"] for row in per_task.values())
    overall = {
        "success_rate": sum(rates.values()) / len(rates),
        "successes": total,
        "episodes": episodes * len(rates),
        "ci95": list(wilson_interval(total, episodes * len(rates))),
    }
    return {
        "per_task": per_task,
        "overall": overall,
        "episodes": [],
        "checkpoint": "runs/x/checkpoints/step_1.pt",
        "step": 1,
        "backend": "metaworld",
        "suite": "mt10",
        "seed": 0,
    }


# ---- the gate on hand-made results -------------------------------------------------------------


def test_no_bar_never_fails():
    assert check_success(make_result({"a": 0.0, "b": 0.0})) == []


def test_a_rate_equal_to_the_bar_passes():
    result = make_result({"a": 0.75, "b": 1.0})
    assert check_success(result, min_success=0.875, min_task_success=0.75) == []
    # 0.7 and 0.9 average to 0.7999999999999999 in floating point: still at the bar
    assert check_success(make_result({"a": 0.7, "b": 0.9}, episodes=10), min_success=0.8) == []
    assert check_success(result, min_success=0.0, min_task_success=0.0) == []


def test_shortfall_lines_name_task_rate_episodes_and_bar():
    lines = check_success(make_result({"a": 0.25, "b": 1.0, "c": 0.5}), min_success=0.9, min_task_success=0.6)
    assert len(lines) == 3
    assert lines[0].startswith("a: ") and "0.250" in lines[0] and "1/4 episodes" in lines[0] and "--min-task-success 0.6" in lines[0]
    assert lines[1].startswith("c: ") and "0.500" in lines[1] and "2/4 episodes" in lines[1]
    assert (
        lines[2].startswith("overall mean over 3 tasks")
        and "0.583" in lines[2]
        and "12 episodes" in lines[2]
        and "--min-success 0.9" in lines[2]
    )
    assert check_success(make_result({"a": 0.25, "b": 1.0}), min_task_success=0.6) == [lines[0]]
    assert len(check_success(make_result({"a": 0.25, "b": 1.0}), min_success=0.9)) == 1


@pytest.mark.parametrize("bar", [-0.1, 1.01, float("nan")])
def test_bars_outside_zero_one_are_rejected(bar):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        check_success(make_result({"a": 0.5}), min_success=bar)
    with pytest.raises(ValueError, match="--min-task-success"):
        junit_xml(make_result({"a": 0.5}), min_task_success=bar)


def test_junit_has_one_testcase_per_task_and_overall():
    result = make_result({"reach-v3": 0.25, "push-v3": 1.0, "door-open-v3": 0.5})
    root = ET.fromstring(junit_xml(result, min_success=0.9, min_task_success=0.6))
    assert root.tag == "testsuite" and root.get("name") == "rlmtl-eval"
    cases = root.findall("testcase")
    assert [case.get("name") for case in cases] == ["reach-v3", "push-v3", "door-open-v3", "overall"]
    assert {case.get("classname") for case in cases} == {"metaworld.mt10"}
    failed = [case.get("name") for case in cases if case.find("failure") is not None]
    assert failed == ["reach-v3", "door-open-v3", "overall"]
    assert root.get("tests") == "4" and root.get("failures") == "3" and root.get("errors") == "0"
    props = {p.get("name"): p.get("value") for p in cases[0].find("properties")}
    assert float(props["success_rate"]) == 0.25 and props["episodes"] == "4" and props["successes"] == "1"
    assert float(props["ci95_low"]) == pytest.approx(result["per_task"]["reach-v3"]["ci95"][0])
    assert "--min-task-success 0.6" in cases[0].find("failure").get("message")
    suite_props = {p.get("name"): p.get("value") for p in root.find("properties")}
    assert suite_props["checkpoint"] == result["checkpoint"] and suite_props["min_success"] == "0.9"


def test_junit_without_bars_has_no_failures_and_escapes_text():
    result = make_result({'odd<&>"task': 0.0})
    result["checkpoint"] = 'runs/"quoted" & <angled>/last.pt'
    root = ET.fromstring(junit_xml(result))
    assert root.get("failures") == "0" and not root.findall(".//failure")
    assert root.find("testcase").get("name") == 'odd<&>"task'
    assert {p.get("name"): p.get("value") for p in root.find("properties")}["checkpoint"] == result["checkpoint"]


def test_github_summary_table_and_verdict():
    result = make_result({"reach-v3": 0.25, "push-v3": 1.0})
    failing = github_summary(result, min_task_success=0.5)
    assert "| reach-v3 | 0.25 |" in failing and "| **mean** |" in failing
    assert "**FAIL**" in failing and "- reach-v3: success 0.250" in failing and "push-v3: success" not in failing
    assert "**PASS** (overall mean ≥ 0.5; every task ≥ 0.25)" in github_summary(result, min_success=0.5, min_task_success=0.25)
    assert "No success bar set" in github_summary(result)


# ---- the command line on a real (barely trained) run -------------------------------------------


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """The tiny 2-task run trained for 2 steps: a policy that fails reach-v3."""
    from rlmtl.config import load_config
    from rlmtl.data.collect import collect
    from rlmtl.training.trainer import train

    folder = tmp_path_factory.mktemp("gate")
    config_path = folder / "tiny.yaml"
    sections = {"data": {"demos_per_task": 2}, "train": {"steps": 2, "checkpoint_every": 2, "log_every": 1, "warmup_steps": 0}}
    config_path.write_text(yaml.safe_dump(tiny_config_dict(folder, **sections)))
    config = load_config(config_path)
    collect(config, progress=False)
    return train(config, progress=False).run_dir


def eval_args(run, *extra):
    return ["eval", str(run), "--episodes", "1", "--workers", "1", "--no-progress", *map(str, extra)]


def test_bar_met_exits_0_and_writes_junit_and_step_summary(trained_run, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    out.mkdir()
    summary = tmp_path / "step_summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    args = eval_args(
        trained_run, "--out", out, "--min-success", "0", "--min-task-success", "0.0", "--junit", out / "junit.xml", "--github-summary"
    )
    assert main(args) == 0
    result = json.loads((out / "eval.json").read_text())
    assert set(result["per_task"]) == {"reach-v3", "drawer-close-v3"}
    root = ET.parse(out / "junit.xml").getroot()
    assert root.get("failures") == "0" and len(root.findall("testcase")) == 3
    text = summary.read_text()
    assert text.startswith("earlier step\n") and "| reach-v3 |" in text and "| drawer-close-v3 |" in text and "**PASS**" in text
    assert "| reach-v3 |" in capsys.readouterr().out


def test_bar_missed_exits_5_after_writing_reports(trained_run, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "GITHUB_STEP_SUMMARY"}
    args = eval_args(trained_run, "--out", out, "--min-task-success", "1.0", "--junit", out / "junit.xml", "--github-summary")
    done = subprocess.run(
        [sys.executable, "-m", "rlmtl", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(env, PYTHONWARNINGS="ignore"),
        timeout=300,
    )
    result = json.loads((out / "eval.json").read_text())  # written before the gate fails
    short = [task for task, row in result["per_task"].items() if row["success_rate"] < 1.0]
    assert short, f"the 2-step policy solved every task: {result['per_task']}"
    assert done.returncode == EXIT_BELOW_BAR, done.stderr
    assert f"success below the bar ({len(short)} shortfall" in done.stderr
    shortfall_lines = [line.strip() for line in done.stderr.splitlines() if "is below --min-task-success 1" in line]
    assert sorted(line.split(":")[0] for line in shortfall_lines) == sorted(short)
    assert all("/1 episodes" in line for line in shortfall_lines)
    root = ET.parse(out / "junit.xml").getroot()
    assert int(root.get("failures")) == len(short) == len(root.findall(".//failure"))
    assert (out / "eval.md").is_file() and "**FAIL**" in done.stdout and "| reach-v3 |" in done.stdout  # summary on stdout


@pytest.mark.parametrize(
    "flag, value", [("--min-success", "1.01"), ("--min-task-success", "-0.5"), ("--min-success", "nan"), ("--min-success", "high")]
)
def test_bar_outside_zero_one_is_a_usage_error(flag, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "runs/whatever", flag, value])
    assert exit_info.value.code == EXIT_USER_ERROR
    assert flag in capsys.readouterr().err


def test_broken_checkpoint_exits_3(tmp_path, capsys):
    assert main(eval_args(tmp_path / "nothing-here")) == EXIT_CHECKPOINT
    assert "nothing-here" in capsys.readouterr().err
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"PK\x03\x04 not a checkpoint")
    assert main(eval_args(broken, "--min-success", "0.5")) == EXIT_CHECKPOINT
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.pt" in err[0] and "cannot load checkpoint" in err[0]


def test_missing_or_bad_output_exits_4_before_evaluating(trained_run, tmp_path, capsys):
    missing = tmp_path / "not-mounted" / "results"
    assert main(eval_args(trained_run, "--out", missing)) == EXIT_OUTPUT
    err = capsys.readouterr().err
    assert f"output folder {missing} does not exist (mount it or create it)" in err
    assert not missing.parent.exists()
    out = tmp_path / "out"
    out.mkdir()
    assert main(eval_args(trained_run, "--out", out, "--junit", tmp_path / "nope" / "junit.xml")) == EXIT_OUTPUT
    assert "nope" in capsys.readouterr().err and not (out / "eval.json").exists()
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    assert main(eval_args(trained_run, "--out", a_file)) == EXIT_OUTPUT
    assert "not a folder" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_unwritable_output_exits_4(trained_run, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(eval_args(trained_run, "--out", locked)) == EXIT_OUTPUT
        assert "not writable" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)


# ---- only finite rollouts count ------------------------------------------------------------------


def doctored_checkpoint(run: Path, folder: Path, change) -> Path:
    """A copy of the run's last checkpoint with `change(model_state_dict)` applied."""
    from rlmtl.training.checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint

    payload = load_checkpoint(resolve_checkpoint(run))
    change(payload["model"])
    return save_checkpoint(folder / "doctored.pt", payload)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_checkpoint_with_nonfinite_weights_is_refused(trained_run, tmp_path, capsys, value):
    checkpoint = doctored_checkpoint(trained_run, tmp_path, lambda model: model["heads.weights.0"].view(-1)[0].fill_(value))
    out = tmp_path / "out"
    out.mkdir()
    assert main(eval_args(checkpoint, "--out", out, "--min-success", "1.0")) == EXIT_CHECKPOINT
    err = capsys.readouterr().err
    assert "weights are not finite" in err and "heads.weights.0" in err and str(checkpoint) in err
    assert not (out / "eval.json").exists()


def test_nan_actions_are_failures_of_their_own_kind_and_fail_the_gate(trained_run, tmp_path):
    # finite weights, zero observation std: every action is NaN (Meta-World would call drawer-close solved)
    checkpoint = doctored_checkpoint(trained_run, tmp_path, lambda model: model["obs_std"].zero_())
    out = tmp_path / "out"
    out.mkdir()
    code = main(eval_args(checkpoint, "--out", out, "--episodes", "2", "--min-success", "1.0", "--min-task-success", "1.0"))
    assert code == EXIT_BELOW_BAR
    result = json.loads((out / "eval.json").read_text())
    for row in result["per_task"].values():
        assert row["success_rate"] == 0.0 and row["failures"] == {"nonfinite_action": 2}
    assert result["overall"]["success_rate"] == 0.0


# ---- the gate counts only episodes it ran, unless asked to resume -------------------------------


def forged_log(run: Path, folder: Path, **changes) -> Path:
    """A real evaluation's episode log, every episode rewritten as a one-step success (and `changes`)."""
    real = folder / "real"
    real.mkdir()
    assert main(eval_args(run, "--out", real, "--episodes", "2")) == 0
    records = [json.loads(line) for line in (real / "eval_episodes.jsonl").read_text().splitlines()]
    forged = folder / "forged"
    forged.mkdir()
    lines = [json.dumps({**r, "success": True, "steps": 1, "failure": "", **changes}) for r in records]
    (forged / "eval_episodes.jsonl").write_text("\n".join(lines) + "\n")
    return forged


def test_a_log_already_in_the_output_folder_is_refused_without_resume(trained_run, tmp_path, capsys):
    out = forged_log(trained_run, tmp_path)
    code = main(eval_args(trained_run, "--out", out, "--episodes", "2", "--min-success", "1.0"))
    assert code == EXIT_OUTPUT
    err = capsys.readouterr().err
    assert str(out / "eval_episodes.jsonl") in err and "--resume" in err
    assert not (out / "eval.json").exists()


def test_resume_reuses_only_episodes_logged_by_this_rlmtl_version(trained_run, tmp_path, capsys):
    out = forged_log(trained_run, tmp_path, rlmtl="0.0.0-other")
    assert main(eval_args(trained_run, "--out", out, "--episodes", "2", "--resume")) == 0
    assert "0 of 4 episodes taken from the logs" in capsys.readouterr().err
    result = json.loads((out / "eval.json").read_text())
    real = json.loads((tmp_path / "real" / "eval.json").read_text())
    assert result["per_task"] == real["per_task"]  # rerun for real, not the forged successes
