"""The eval.json result: its typed rows, and one definition of the overall success rate."""

import pytest

from rlmtl.evaluation.gate import check_success
from rlmtl.evaluation.results import (
    EpisodeError,
    EpisodeRow,
    ErrorRow,
    OverallResult,
    TaskResult,
    overall_result,
    results_markdown,
    summarise,
    wilson_interval,
)
from rlmtl.evaluation.rollout import EpisodeOutcome
from rlmtl.tag.grouped import merge_results, validate_plan


def crashed(seed: int) -> EpisodeError:
    return {"scene_seed": seed, "error": "worker exited with code 1", "attempts": 3}


def test_overall_counts_a_task_whose_every_episode_errored_as_zero():
    # a: 4/4 solved, b: every episode an error, c: 2/4 solved
    outcomes = {(0, e): EpisodeOutcome(success=True, steps=10, scene_seed=e) for e in range(4)}
    outcomes |= {(2, e): EpisodeOutcome(success=e < 2, steps=20, scene_seed=e, failure="" if e < 2 else "step_limit") for e in range(4)}
    errors = {(1, e): crashed(e) for e in range(4)}
    result = summarise(["a", "b", "c"], 4, outcomes, errors)
    b = result["per_task"]["b"]
    assert (b["success_rate"], b["episodes"], b["errors"], b["episodes_requested"]) == (0.0, 0, 4, 4)
    overall = result["overall"]
    rates = [row["success_rate"] for row in result["per_task"].values()]
    assert overall["success_rate"] == pytest.approx(0.5) == pytest.approx(sum(rates) / len(rates))  # not 0.75 over a and c only
    assert (overall["successes"], overall["episodes"], overall["errors"]) == (6, 8, 4)
    assert overall["ci95"] == list(wilson_interval(6, 8))  # pooled over the episodes that ran
    assert "| **mean** | **0.500** |" in results_markdown(result) and "No episode of b ran" in results_markdown(result)
    assert check_success(result, min_success=0.7)  # a crashed task cannot let the gate pass


def test_merged_grouped_result_has_the_same_overall_as_summarise_on_the_same_rows():
    tasks = ["a", "b", "c", "d"]
    plan = validate_plan([["a", "b", "c"], ["c", "d"]], {"c": 1}, tasks, "g")

    def outcome(group: int, task: str, episode: int) -> EpisodeOutcome:
        solved = (episode + group + ord(task)) % 3 == 0
        return EpisodeOutcome(
            success=solved, steps=5 + episode, scene_seed=100 * ord(task) + episode, failure="" if solved else "step_limit"
        )

    def group_result(group: int, members: list[str], errored: set[str]) -> dict:
        slots = {(i, e): (task, e) for i, task in enumerate(members) for e in range(3)}
        outcomes = {slot: outcome(group, *key) for slot, key in slots.items() if key[0] not in errored}
        errors = {slot: crashed(100 * ord(key[0]) + key[1]) for slot, key in slots.items() if key[0] in errored}
        return {**summarise(members, 3, outcomes, errors), "checkpoint": f"g{group}.pt", "step": 7, "suite": "s", "backend": "b", "seed": 0}

    # d (served by group 1) errored on every episode; group 0's c errored too but group 1 serves c
    results = [group_result(0, ["a", "b", "c"], {"c"}), group_result(1, ["c", "d"], {"d"})]
    merged = merge_results(plan, tasks, results, ["g0.pt", "g1.pt"])
    served = {(i, e): outcome(plan.serve[task], task, e) for i, task in enumerate(tasks) for e in range(3) if task != "d"}
    direct = summarise(tasks, 3, served, {(3, e): crashed(100 * ord("d") + e) for e in range(3)})
    assert merged["per_task"] == direct["per_task"] and merged["episodes"] == direct["episodes"]
    assert merged["overall"] == direct["overall"] == overall_result(direct["per_task"])
    assert merged["overall"]["errors"] == 3 and merged["per_task"]["d"]["success_rate"] == 0.0


def test_the_types_name_every_key_summarise_writes():
    outcomes = {(0, 0): EpisodeOutcome(success=False, steps=3, scene_seed=1, failure="ik_error")}
    result = summarise(["a"], 2, outcomes, {(0, 1): crashed(2)})
    assert set(result["per_task"]["a"]) == TaskResult.__required_keys__
    assert set(result["overall"]) == OverallResult.__required_keys__
    ran, errored = result["episodes"]
    assert set(ran) == EpisodeRow.__required_keys__ and set(errored) == ErrorRow.__required_keys__
    assert result["per_task"]["a"]["failures"] == {"ik_error": 1}


def test_overall_of_no_task_is_zero():
    assert overall_result({}) == {"success_rate": 0.0, "successes": 0, "episodes": 0, "errors": 0, "ci95": [0.0, 1.0]}
