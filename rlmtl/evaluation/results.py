"""The result of an evaluation (the content of eval.json), its statistics and its Markdown table.

An `EvalResult` holds `per_task` {task: `TaskResult`}, `overall` (`OverallResult`), `episodes`
(one row per requested episode: an `EpisodeRow` when it ran, an `ErrorRow` when it ended in an
error on every rerun), the `checkpoint`, its `step`, `suite`, `backend` and evaluation `seed`;
optionally `videos` {task: path}, and for a grouped run `groups` and `models` {task: checkpoint}.

Success rates:

- per task, `success_rate` = `successes / episodes` over the episodes that ran (errors excluded),
  0.0 when none ran; `ci95` is its 95% Wilson interval;
- overall (`overall_result`), `success_rate` = the mean of the per-task `success_rate` column over
  ALL tasks of the evaluation: a task whose every episode ended in an error counts as 0, so the
  mean row equals the mean of the table's column and a gate cannot pass because a task crashed.
  `successes`, `episodes` and the Wilson `ci95` are pooled over the episodes that ran; `errors`
  is the total over tasks.
"""

from __future__ import annotations

import collections
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, final

import numpy as np

from rlmtl.atomic import write_text_atomic
from rlmtl.errors import EpisodeErrors

if TYPE_CHECKING:
    from rlmtl.evaluation.rollout import EpisodeOutcome

Slot = tuple[int, int]
"""(task index, episode index) of one evaluation episode."""


class TaskResult(TypedDict):
    """One task's row of `per_task`."""

    success_rate: float  # successes / episodes; 0.0 when no episode ran
    successes: int
    episodes: int  # episodes that ran (errors excluded)
    errors: int  # episodes that ended in an error on every rerun
    episodes_requested: int  # episodes + errors
    ci95: list[float]  # [low, high], 95% Wilson interval of success_rate
    mean_steps: float  # over the episodes that ran; 0.0 when none ran
    failures: dict[str, int]  # unsolved episodes by kind (the env's info["failure"] or "step_limit")


class OverallResult(TypedDict):
    """`overall`: see the module docstring for its definition."""

    success_rate: float  # mean of the per-task success_rate over all tasks
    successes: int  # pooled over the episodes that ran
    episodes: int
    errors: int
    ci95: list[float]  # [low, high], Wilson interval of successes / episodes


class EpisodeError(TypedDict):
    """An episode that failed on every rerun (a worker crash or hang, or a simulator error)."""

    scene_seed: int
    error: str
    attempts: int


@final
class EpisodeRow(TypedDict):
    """A row of `episodes` for an episode that ran."""

    task: str
    episode: int
    scene_seed: int
    success: bool
    steps: int
    failure: str  # "" when solved


@final
class ErrorRow(EpisodeError):
    """A row of `episodes` for an episode that ended in an error (has an `error` key)."""

    task: str
    episode: int


EpisodeRecord = EpisodeRow | ErrorRow
"""A row of `episodes`."""


class EvalSummary(TypedDict):
    """What `summarise` computes from the episodes: the statistics part of an `EvalResult`."""

    per_task: dict[str, TaskResult]
    overall: OverallResult
    episodes: list[EpisodeRecord]


class _EvalResultOptional(TypedDict, total=False):
    videos: dict[str, str]  # task -> video file, with eval.video
    groups: dict[str, Any]  # grouped run: its `GroupPlan.to_dict()`
    models: dict[str, str]  # grouped run: task -> checkpoint of its serving group
    provenance: dict[str, Any]  # the evaluating process's `rlmtl.provenance.provenance()`
    trained_with: dict[str, Any]  # the checkpoint's training provenance (absent in older checkpoints)


class EvalResult(EvalSummary, _EvalResultOptional):
    """The content of eval.json."""

    checkpoint: str
    step: int
    suite: str
    backend: str
    seed: int


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval (low, high) of `successes / trials`; (0, 1) when `trials` is 0."""
    if trials == 0:
        return (0.0, 1.0)
    p = successes / trials
    denominator = 1 + z * z / trials
    center = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return (max(0.0, center - half), min(1.0, center + half))


def overall_result(per_task: Mapping[str, TaskResult]) -> OverallResult:
    """The `overall` row of `per_task`: `success_rate` is the mean of the per-task rates over all
    tasks (a task with no episode that ran counts as 0; 0.0 for no task); counts and the Wilson
    interval are pooled over the episodes that ran; `errors` is the total."""
    rows = list(per_task.values())
    successes = sum(row["successes"] for row in rows)
    episodes = sum(row["episodes"] for row in rows)
    low, high = wilson_interval(successes, episodes)
    return {
        "success_rate": float(np.mean([row["success_rate"] for row in rows])) if rows else 0.0,
        "successes": successes,
        "episodes": episodes,
        "errors": sum(row.get("errors", 0) for row in rows),
        "ci95": [low, high],
    }


def _task_result(outcomes: list[EpisodeOutcome], errors: int, requested: int) -> TaskResult:
    """One task's row from the outcomes of its episodes that ran."""
    successes = sum(o.success for o in outcomes)
    trials = len(outcomes)
    low, high = wilson_interval(successes, trials)
    failures = collections.Counter(o.failure for o in outcomes if not o.success)
    return {
        "success_rate": successes / trials if trials else 0.0,
        "successes": successes,
        "episodes": trials,
        "errors": errors,
        "episodes_requested": requested,
        "ci95": [low, high],
        "mean_steps": float(np.mean([o.steps for o in outcomes])) if outcomes else 0.0,
        "failures": dict(sorted(failures.items())),
    }


def summarise(
    tasks: list[str],
    episodes_per_task: int,
    outcomes: Mapping[Slot, EpisodeOutcome],
    errors: Mapping[Slot, EpisodeError] | None = None,
) -> EvalSummary:
    """Per-task and overall success with 95% intervals, failures by kind, errors, every episode.

    `outcomes` and `errors` are keyed by (task index into `tasks`, episode in [0, episodes_per_task));
    each slot must be in exactly one of them. Rates as in the module docstring.
    """
    errors = errors or {}
    per_task: dict[str, TaskResult] = {}
    episodes: list[EpisodeRecord] = []
    for index, task in enumerate(tasks):
        ran: list[EpisodeOutcome] = []
        task_errors = 0
        for e in range(episodes_per_task):
            slot = (index, e)
            if (slot in outcomes) == (slot in errors):
                raise ValueError(f"task {task!r} episode {e}: expected exactly one outcome or error")
            if slot in outcomes:
                o = outcomes[slot]
                ran.append(o)
                episodes.append(
                    {"task": task, "episode": e, "scene_seed": o.scene_seed, "success": o.success, "steps": o.steps, "failure": o.failure}
                )
            else:
                task_errors += 1
                episodes.append({"task": task, "episode": e, **errors[slot]})
        per_task[task] = _task_result(ran, task_errors, episodes_per_task)
    return {"per_task": per_task, "overall": overall_result(per_task), "episodes": episodes}


def episode_errors(result: EvalSummary) -> EpisodeErrors | None:
    """The error to raise (exit 6) when some episodes of `result` ended in an error, else None."""
    count = result["overall"].get("errors", 0)
    if not count:
        return None
    lines = [
        f"{count} episode{'s' if count != 1 else ''} failed on every rerun (worker crash or hang, or simulator error) and are NOT in the success rates:"
    ]
    for row in result["episodes"]:
        if "error" in row:
            lines.append(
                f"  {row['task']} episode {row['episode']} (scene seed {row['scene_seed']}, {row['attempts']} attempts): {row['error']}"
            )
    return EpisodeErrors("\n".join(lines))


def results_markdown(result: EvalSummary) -> str:
    """The per-task table of an eval result as Markdown: success over the episodes that ran,
    errors (episodes that never finished, not in the rate) and failures by kind, then the mean
    row (`overall`)."""
    lines = ["| task | success | 95% CI | episodes | errors | mean steps | failures |", "|---|---|---|---|---|---|---|"]
    for task, row in result["per_task"].items():
        low, high = row["ci95"]
        kinds = ", ".join(f"{kind} {count}" for kind, count in row.get("failures", {}).items())
        lines.append(
            f"| {task} | {row['success_rate']:.2f} | {low:.2f}–{high:.2f} | {row['episodes']} | {row.get('errors', 0)} | {row['mean_steps']:.0f} | {kinds} |"
        )
    overall = result["overall"]
    low, high = overall["ci95"]
    lines.append(
        f"| **mean** | **{overall['success_rate']:.3f}** | {low:.2f}–{high:.2f} | {overall['episodes']} | {overall.get('errors', 0)} | | |"
    )
    if overall.get("errors"):
        lines += [
            "",
            f"**{overall['errors']} episode(s) ended in an error (worker crash, hang or simulator error on every rerun) and are not counted in the success rates.**",
        ]
        unrun = [task for task, row in result["per_task"].items() if not row["episodes"]]
        if unrun:
            lines.append(f"**No episode of {', '.join(unrun)} ran: counted as success 0 in the mean.**")
    return "\n".join(lines) + "\n"


def write_results(folder: Path, result: EvalResult) -> None:
    """eval.json and eval.md in `folder`, atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "eval.json", json.dumps(result, indent=2) + "\n")
    header = f"# Evaluation of `{result['checkpoint']}` (step {result['step']})\n\n"
    write_text_atomic(folder / "eval.md", header + results_markdown(result))
