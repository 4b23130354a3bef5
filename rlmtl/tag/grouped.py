"""Grouped training: one model per task group, each task evaluated with the model that serves it.

TAG (Fifty et al., "Efficiently Identifying Task Groupings for Multi-Task Learning", NeurIPS 2021,
arXiv 2109.04617) recommends k networks, each trained on a group of tasks; a task in several
groups is served by the group whose other members help it most. `rlmtl train --groups G.json`
(and `rlmtl run --groups`) trains every group with the run's own config (so each task gets the
same number of steps and samples as in a single all-task run), evaluates each group's model, and
writes one eval.json/report.md in the format of a single run, so the two compare side by side.

Accepted group files:
  * `affinity.json` written by `rlmtl affinity`, with `--k K`: its best grouping with at most K
    groups (and the serving group of each task it records);
  * `{"groups": [[task, ...], ...], "serve": {task: group index}}`, `serve` needed only for the
    tasks listed in more than one group;
  * a bare list of groups.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlmtl.atomic import write_text_atomic
from rlmtl.config import RunConfig
from rlmtl.errors import ConfigError
from rlmtl.evaluation.settings import EvalSettings

if TYPE_CHECKING:
    from rlmtl.evaluation.results import EvalResult
    from rlmtl.pipeline import StageTimes


@dataclass(frozen=True)
class GroupPlan:
    """Groups of task names and the group index serving each task."""

    groups: list[list[str]]
    serve: dict[str, int]
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"groups": self.groups, "serve": self.serve, "source": self.source}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: group file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path}: not a readable JSON group file ({error})") from None


def load_group_plan(path: str | Path, tasks: list[str], k: int | None = None) -> GroupPlan:
    """Read and validate a group file against the run's `tasks` (see the module docstring)."""
    path = Path(path)
    data = _read_json(path)
    serve: dict[str, Any] = {}
    is_affinity_file = isinstance(data, dict) and "groupings" in data
    if is_affinity_file:
        if k is None:
            raise ConfigError(
                f"{path}: an affinity file holds groupings for every budget; choose one with --k (1..{len(data['groupings'])})"
            )
        ranked = data["groupings"].get(str(k))
        if not ranked:
            raise ConfigError(f"{path}: no grouping for --k {k} (budgets: {', '.join(data['groupings'])})")
        groups, serve = ranked[0]["groups"], dict(ranked[0].get("serve") or _serve_from_matrix(data, ranked[0]["groups"]))
        source = f"{path} (k={k}, best grouping)"
    elif isinstance(data, dict) and "groups" in data:
        groups, serve = data["groups"], dict(data.get("serve") or {})
        source = str(path)
    elif isinstance(data, list):
        groups, source = data, str(path)
    else:
        raise ConfigError(f"{path}: expected a list of groups, an object with 'groups', or an affinity.json with --k")
    if k is not None and not is_affinity_file:
        raise ConfigError(f"{path}: --k applies to affinity files only; this file lists its groups itself")
    return validate_plan(groups, serve, tasks, source)


def _serve_from_matrix(data: dict[str, Any], groups: list[list[str]]) -> dict[str, int]:
    """Serving groups from an affinity file's matrix (files written before 'serve' was recorded)."""
    from rlmtl.tag.grouping import serving_groups

    names = data.get("tasks", [])
    if "affinity" not in data or not all(t in names for g in groups for t in g):
        return {}
    indices = [[names.index(t) for t in g] for g in groups]
    serve = serving_groups(data["affinity"], indices)
    return {names[i]: serve[i] for i in range(len(names)) if any(names[i] in g for g in groups)}


def validate_plan(groups: Any, serve: dict[str, Any], tasks: list[str], source: str) -> GroupPlan:
    """Every group a non-empty list of distinct run tasks, every task covered and served once."""
    if not isinstance(groups, list) or not groups:
        raise ConfigError(f"{source}: 'groups' must be a non-empty list of task lists")
    for index, group in enumerate(groups):
        if not isinstance(group, list) or not group or not all(isinstance(t, str) for t in group):
            raise ConfigError(f"{source}: group {index} must be a non-empty list of task names, got {group!r}")
        unknown = [t for t in group if t not in tasks]
        if unknown:
            raise ConfigError(f"{source}: group {index} names tasks not in this run: {', '.join(unknown)} (tasks: {', '.join(tasks)})")
        if len(set(group)) != len(group):
            raise ConfigError(f"{source}: group {index} lists a task twice: {group}")
    resolved: dict[str, int] = {}
    for task in tasks:
        holders = [i for i, group in enumerate(groups) if task in group]
        if not holders:
            raise ConfigError(f"{source}: task {task} is in no group (every task of the run needs a model)")
        chosen = serve.get(task, holders[0] if len(holders) == 1 else None)
        if chosen is None:
            raise ConfigError(f"{source}: task {task} is in groups {holders}; say which serves it in 'serve'")
        if chosen not in holders:
            raise ConfigError(f"{source}: serve[{task}] = {chosen!r} is not a group containing {task} (groups {holders})")
        resolved[task] = int(chosen)
    extra = [t for t in serve if t not in tasks]
    if extra:
        raise ConfigError(f"{source}: 'serve' names tasks not in this run: {', '.join(extra)}")
    return GroupPlan(groups=[list(g) for g in groups], serve=resolved, source=source)


def grouped_run_dir(config: RunConfig, plan: GroupPlan) -> Path:
    """The folder of a grouped run: `name` when set, else `<default name>-<k>groups`."""
    name = config.name or f"{config.run_name}-{len(plan.groups)}groups"
    return Path(config.out_dir) / name


def group_config(config: RunConfig, parent: Path, index: int, tasks: list[str], dataset: Path) -> RunConfig:
    """The run config of group `index`: the same run on a subset of tasks, in parent/group<index>."""
    return replace(
        config,
        name=f"group{index}",
        out_dir=str(parent),
        env=replace(config.env, tasks=list(tasks)),
        data=replace(config.data, path=str(dataset)),
    )


def merge_results(plan: GroupPlan, tasks: list[str], results: list[EvalResult], checkpoints: list[str]) -> EvalResult:
    """One eval.json over all `tasks`: each task's row and episodes from `results[g]`, the result of
    the model `checkpoints[g]` of its serving group g; `overall` over all tasks (`overall_result`)."""
    from rlmtl.evaluation.results import overall_result

    per_task = {task: results[plan.serve[task]]["per_task"][task] for task in tasks}
    episodes = [e for task in tasks for e in results[plan.serve[task]]["episodes"] if e["task"] == task]
    first = results[0]
    return {
        "per_task": per_task,
        "overall": overall_result(per_task),
        "episodes": episodes,
        "checkpoint": f"{len(plan.groups)} group models (see 'models')",
        "step": max(r["step"] for r in results),
        "suite": first["suite"],
        "backend": first["backend"],
        "seed": first["seed"],
        "groups": plan.to_dict(),
        "models": {task: checkpoints[plan.serve[task]] for task in tasks},
    }


def groups_markdown(plan: GroupPlan, tasks: list[str]) -> str:
    """The groups and which group's model each task is evaluated with."""
    lines = ["## Task groups", "", f"From {plan.source}.", "", "| group | tasks | serves |", "|---|---|---|"]
    for index, group in enumerate(plan.groups):
        served = [t for t in tasks if plan.serve[t] == index]
        lines.append(f"| group{index} | {', '.join(group)} | {', '.join(served) or '—'} |")
    return "\n".join(lines) + "\n"


def prepare_group_folder(config: RunConfig, plan: GroupPlan) -> Path:
    """Create the grouped run's folder and record the plan in it (groups.json)."""
    parent = grouped_run_dir(config, plan)
    parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(parent / "groups.json", json.dumps(plan.to_dict(), indent=1) + "\n")
    return parent


def train_groups(
    config: RunConfig, plan: GroupPlan, parent: Path, dataset: Path, resume: bool, progress: bool, times: "StageTimes"
) -> EvalResult:
    """Train and evaluate one model per group (each in parent/group<i>) with the pipeline's
    `train_and_evaluate`, then write the merged eval.json/eval.md over all tasks in `parent`."""
    from rlmtl.envs import make_suite
    from rlmtl.evaluation.results import write_results
    from rlmtl.pipeline import train_and_evaluate
    from rlmtl.training.checkpoint import resolve_last

    tasks = make_suite(config.env.backend, config.env.suite).select_tasks(config.env.tasks)
    settings = EvalSettings.from_config(config.eval, video=False, progress=progress)
    results, checkpoints = [], []
    for index, group in enumerate(plan.groups):
        sub = group_config(config, parent, index, group, dataset)
        print(f"rlmtl: group{index} ({len(group)} tasks): {', '.join(group)}", file=sys.stderr)
        has_run = resolve_last(sub.run_dir / "checkpoints") is not None
        _, checkpoint, result = train_and_evaluate(sub, settings, resume and has_run, progress, times, f" group{index}")
        results.append(result)
        checkpoints.append(str(checkpoint))
    merged = merge_results(plan, tasks, results, checkpoints)
    write_results(parent, merged)
    return merged
