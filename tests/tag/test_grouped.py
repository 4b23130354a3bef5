"""Grouped training (`rlmtl train --groups`): group files, serving groups, merged results, end to end."""

import json

import numpy as np
import pytest

from rlmtl.cli import main
from rlmtl.errors import ConfigError
from rlmtl.tag.grouped import load_group_plan, merge_results, validate_plan
from rlmtl.tag.grouping import serving_groups

TASKS = ["a", "b", "c", "d"]


def test_serving_group_is_the_one_whose_members_help_most():
    affinity = np.zeros((4, 4))
    affinity[1, 0] = 0.5  # b helps a
    affinity[2, 0] = -0.5  # c hurts a
    affinity[3, 0] = 0.1  # d helps a a little
    groups = [(0, 2), (0, 1), (0, 3), (3,)]
    serve = serving_groups(affinity, groups)
    assert serve[0] == 1
    assert serve[3] == 2 or serve[3] == 3  # d receives 0 from a and 0 alone: the earlier group wins
    assert serve[3] == 2
    with pytest.raises(ValueError, match="task 2 is in no group"):
        serving_groups(affinity, [(0, 1), (3,)])


def test_group_file_forms(tmp_path):
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps([["a", "b"], ["c", "d"]]))
    plan = load_group_plan(bare, TASKS)
    assert plan.groups == [["a", "b"], ["c", "d"]] and plan.serve == {"a": 0, "b": 0, "c": 1, "d": 1}

    explicit = tmp_path / "explicit.json"
    explicit.write_text(json.dumps({"groups": [["a", "b", "c"], ["c", "d"]], "serve": {"c": 1}}))
    assert load_group_plan(explicit, TASKS).serve["c"] == 1

    affinity = tmp_path / "affinity.json"
    grouping = {"groups": [["a", "b"], ["b", "c", "d"]], "score": 0.1, "serve": {"a": 0, "b": 1, "c": 1, "d": 1}}
    affinity.write_text(json.dumps({"tasks": TASKS, "groupings": {"1": [{"groups": [TASKS], "score": 0.0}], "2": [grouping]}}))
    plan = load_group_plan(affinity, TASKS, k=2)
    assert plan.groups == grouping["groups"] and plan.serve["b"] == 1 and "k=2" in plan.source
    # files without 'serve': the serving groups come from the matrix (c helps b more than a does)
    matrix = np.zeros((4, 4))
    matrix[2, 1] = 0.3
    del grouping["serve"]
    affinity.write_text(json.dumps({"tasks": TASKS, "affinity": matrix.tolist(), "groupings": {"2": [grouping]}}))
    assert load_group_plan(affinity, TASKS, k=2).serve == {"a": 0, "b": 1, "c": 1, "d": 1}
    with pytest.raises(ConfigError, match="--k"):
        load_group_plan(affinity, TASKS)
    with pytest.raises(ConfigError, match="no grouping for --k 5"):
        load_group_plan(affinity, TASKS, k=5)
    with pytest.raises(ConfigError, match="--k applies to affinity files only"):
        load_group_plan(bare, TASKS, k=2)


@pytest.mark.parametrize(
    "groups, serve, message",
    [
        ([["a", "b"], ["c"]], {}, "task d is in no group"),
        ([["a", "b", "x"], ["c", "d"]], {}, "not in this run: x"),
        ([["a", "b", "c"], ["c", "d"]], {}, "task c is in groups \\[0, 1\\]"),
        ([["a", "b", "c"], ["c", "d"]], {"c": 5}, "serve\\[c\\] = 5"),
        ([["a", "a"], ["b", "c", "d"]], {}, "lists a task twice"),
        ([], {}, "non-empty list"),
        ([["a", "b"], "cd"], {}, "group 1 must be"),
        ([["a", "b"], ["c", "d"]], {"z": 0}, "'serve' names tasks not in this run: z"),
    ],
)
def test_bad_groups_are_refused_with_the_reason(groups, serve, message):
    with pytest.raises(ConfigError, match=message):
        validate_plan(groups, serve, TASKS, "g.json")


def test_missing_or_broken_group_file_names_the_file(tmp_path):
    with pytest.raises(ConfigError, match="nope.json: group file not found"):
        load_group_plan(tmp_path / "nope.json", TASKS)
    broken = tmp_path / "broken.json"
    broken.write_text("[[")
    with pytest.raises(ConfigError, match="broken.json: not a readable JSON"):
        load_group_plan(broken, TASKS)


def _result(rates: dict[str, float], step: int) -> dict:
    per_task = {t: {"success_rate": r, "successes": int(r * 4), "episodes": 4, "ci95": [0, 1], "mean_steps": 1.0} for t, r in rates.items()}
    episodes = [{"task": t, "episode": e, "success": e < int(r * 4)} for t, r in rates.items() for e in range(4)]
    return {"per_task": per_task, "episodes": episodes, "step": step, "suite": "s", "backend": "b", "seed": 0}


def test_merged_result_takes_each_task_from_its_serving_group():
    plan = validate_plan([["a", "b", "c"], ["c", "d"]], {"c": 1}, TASKS, "g")
    results = [_result({"a": 1.0, "b": 0.5, "c": 0.0}, 10), _result({"c": 0.75, "d": 0.25}, 10)]
    merged = merge_results(plan, TASKS, results, ["g0.pt", "g1.pt"])
    assert {t: r["success_rate"] for t, r in merged["per_task"].items()} == {"a": 1.0, "b": 0.5, "c": 0.75, "d": 0.25}
    assert merged["overall"]["success_rate"] == pytest.approx(0.625)
    assert merged["overall"]["successes"] == 4 + 2 + 3 + 1 and merged["overall"]["episodes"] == 16
    assert merged["models"] == {"a": "g0.pt", "b": "g0.pt", "c": "g1.pt", "d": "g1.pt"}
    assert sum(e["task"] == "c" for e in merged["episodes"]) == 4


@pytest.mark.slow
def test_train_groups_end_to_end(tiny_config_file, tmp_path, capsys):
    tasks = ["reach-v3", "drawer-close-v3", "window-close-v3"]
    config = tiny_config_file(env={"tasks": tasks})
    groups = tmp_path / "groups.json"
    groups.write_text(json.dumps([["reach-v3", "drawer-close-v3"], ["window-close-v3"]]))
    assert main(["train", str(config), "--groups", str(groups), "--no-progress"]) == 0
    run = tmp_path / "runs" / "tiny"
    merged = json.loads((run / "eval.json").read_text())
    assert list(merged["per_task"]) == tasks
    for index, members in enumerate([["reach-v3", "drawer-close-v3"], ["window-close-v3"]]):
        own = json.loads((run / f"group{index}" / "eval.json").read_text())
        assert list(own["per_task"]) == members
        for task in members:
            assert merged["per_task"][task] == own["per_task"][task]
            assert merged["models"][task].startswith(str(run / f"group{index}" / "checkpoints"))
    assert merged["overall"]["episodes"] == 3 * 2
    report = (run / "report.md").read_text()
    assert "## Task groups" in report and "| group1 | window-close-v3 | window-close-v3 |" in report
    assert "**mean**" in capsys.readouterr().out
    # resuming a finished grouped run trains nothing more and gives the same result
    assert main(["train", str(config), "--groups", str(groups), "--resume", "--no-progress"]) == 0
    again = json.loads((run / "eval.json").read_text())
    assert again["per_task"] == merged["per_task"] and again["step"] == merged["step"]
