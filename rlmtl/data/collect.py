"""`rlmtl collect`: scripted-expert demos for every task, in parallel, into one dataset file.

Attempt `a` of task `t` always uses scene `scene_seed("train", data.seed, t, a)`. Attempts run in
rounds; after each round a task that has fewer successful demos than asked gets more attempts,
up to `data.max_attempts_per_demo` x the request. The demos kept are the successful attempts
with the lowest indices, so the file does not depend on the number of workers or on timing.

Attempts run in the same `RobustPool` as evaluation episodes: a worker that crashes (a simulator
segfault) or hangs (`data.attempt_timeout_s`) is killed and replaced and the attempt rerun with the
same scene seed, up to `data.max_attempt_retries` times; an attempt that still fails counts as a
failed attempt (reported on stderr), so one bad scene never aborts the collection. Every finished
attempt is journaled beside the dataset (`attempt_journal.py`), so a collection killed half-way
resumes from the attempts it had finished and writes the same file.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from rlmtl.build import env_settings
from rlmtl.config import RunConfig, dataset_fingerprint, dataset_path
from rlmtl.data.attempt_journal import AttemptJournal
from rlmtl.data.dataset import Episode, TaskRecord, check_replaceable, read_attrs, write_dataset
from rlmtl.envs import EnvSettings, ProcessEnvs, Suite, make_suite, scene_seed
from rlmtl.errors import ConfigError, DatasetError, RlmtlError
from rlmtl.evaluation.rollout import run_episode
from rlmtl.folder_lock import FolderLock
from rlmtl.pool import Job, RobustPool, resolve_workers
from rlmtl.progress import progress_bar

_WORKER_ENVS = ProcessEnvs()  # a worker's envs, kept across attempts
_WORKER_EXPERTS: dict = {}  # a worker's scripted experts by task settings


def _close_collector() -> None:
    """Worker exit: shut the worker's simulators down."""
    _WORKER_ENVS.close()


def _expert_episode(settings: EnvSettings, seed: int, attempt: int, steps_after_success: int = 0) -> Episode | None:
    """Worker job: one expert episode (going on `steps_after_success` steps after its first
    success); None when the expert failed. A suite without a scripted expert records the demo with
    its own demonstrator (`Suite.record_demo`, e.g. RLBench's `get_demos(live_demos=True)`)."""
    suite, env = _WORKER_ENVS.get(settings)
    if settings not in _WORKER_EXPERTS:
        _WORKER_EXPERTS[settings] = suite.make_expert(settings.task)
    expert = _WORKER_EXPERTS[settings]
    if expert is None:
        try:
            return suite.record_demo(env, seed, attempt)
        except NotImplementedError:
            raise RlmtlError(f"backend {settings.backend!r} has no scripted expert or demo recorder for task {settings.task!r}") from None
    outcome, episode = run_episode(env, expert, seed, record=True, steps_after_success=steps_after_success)
    if not outcome.success:
        return None
    assert episode is not None
    episode.attempt = attempt
    return episode


def dataset_attrs(
    config: RunConfig, suite: Any, tasks: list[str], obs_spec: dict[str, Any], seeds: dict[str, Any], renderer: str | None = None
) -> dict[str, Any]:
    """The root attributes every rlmtl dataset carries (see rlmtl/data/dataset.py), for `config`;
    with cameras also `image_size`, and `renderer` (default: the one the config's options select)
    where the backend has several."""
    renderer = renderer if renderer is not None else suite.renderer(config.env.options)
    images = {"image_size": config.env.image_size} if config.env.cameras else {}
    return {
        **images,
        **({"renderer": renderer} if renderer is not None else {}),
        "backend": config.env.backend,
        "suite": config.env.suite,
        "tasks": tasks,
        "observation_spec": {k: v.to_dict() for k, v in obs_spec.items()},
        "action_spec": suite.action_spec().to_dict(),
        "seeds": seeds,
        "max_episode_steps": config.env.max_episode_steps or suite.max_episode_steps,
        "fingerprint": dataset_fingerprint(config),
        **({"steps_after_success": config.data.steps_after_success} if config.data.steps_after_success else {}),
    }


def dataset_is_current(path: Path, config: RunConfig) -> bool:
    """True when `path` exists and was written with the same collection settings."""
    if not path.is_file():
        return False
    try:
        attrs = read_attrs(path)
    except DatasetError:
        return False
    return attrs.get("fingerprint") == dataset_fingerprint(config)


def _imported_from(path: Path) -> str | None:
    """What `rlmtl import` read to write the dataset at `path` (its format and sources), else None."""
    if not path.is_file():
        return None
    try:
        source = read_attrs(path).get("imported_from")
    except DatasetError:
        return None
    if not isinstance(source, dict):
        return None
    return f"{source.get('format')} {', '.join(map(str, source.get('sources', [])))}"


def collect(config: RunConfig, force: bool = False, progress: bool = True) -> Path:
    """Collect (or reuse) the dataset of `config`; returns its path. The dataset path is locked
    while collecting, and a file there that is not an rlmtl dataset is never replaced."""
    path = dataset_path(config)
    if not force and dataset_is_current(path, config):
        print(f"rlmtl collect: reusing {path} (same settings)", file=sys.stderr)
        return path
    imported = _imported_from(path)
    if not force and imported is not None:  # `rlmtl import` wrote it: demos from elsewhere, not to be re-collected
        print(f"rlmtl collect: using {path}, imported from {imported} (--force collects over it)", file=sys.stderr)
        return path
    check_replaceable(path)
    suite = make_suite(config.env.backend, config.env.suite)
    tasks = suite.select_tasks(config.env.tasks)  # bad names fail here, before anything is written
    if config.data.steps_after_success and suite.make_expert(tasks[0]) is None:
        raise ConfigError(
            f"data.steps_after_success: suite {config.env.suite!r} records demos with its own demonstrator, which stops at "
            f"the task's success; set it to 0, got {config.data.steps_after_success}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    with FolderLock(path.parent, "rlmtl collect", f".{path.name}.lock"):
        _collect_into(path, config, suite, tasks, progress)
    return path


def _collect_into(path: Path, config: RunConfig, suite: Suite, tasks: list[str], progress: bool) -> None:
    obs_spec = suite.observation_spec(config.env.cameras, config.env.image_size)
    wanted = config.data.demos_per_task
    max_attempts = max(wanted, math.ceil(wanted * config.data.max_attempts_per_demo))
    kept: dict[str, list[Episode]] = {task: [] for task in tasks}
    attempts = {task: 0 for task in tasks}
    successes = {task: 0 for task in tasks}  # successful expert attempts, kept or not
    settings = {task: env_settings(config, task) for task in tasks}
    workers = resolve_workers(config.data.workers)
    journal = AttemptJournal(path, dataset_fingerprint(config), {task: suite.task_index(task) for task in tasks})
    finished = journal.load()
    if finished:
        print(f"rlmtl collect: resuming from {len(finished)} finished attempts in {journal.folder}", file=sys.stderr)
    bar = progress_bar(wanted * len(tasks), "collect", "demo", progress)
    pool = RobustPool(
        workers, timeout_s=config.data.attempt_timeout_s, max_retries=config.data.max_attempt_retries, finalizer=_close_collector
    )
    with pool:
        while True:
            jobs, round_attempts = [], []
            for task in tasks:
                missing = wanted - len(kept[task])
                budget = max_attempts - attempts[task]
                # ask for a little more than missing, since the expert fails on some scenes
                count = min(budget, missing + math.ceil(0.1 * missing)) if missing > 0 else 0
                for attempt in range(attempts[task], attempts[task] + count):
                    round_attempts.append((task, attempt))
                    if (task, attempt) not in finished:
                        seed = scene_seed("train", config.data.seed, suite.task_index(task), attempt)
                        jobs.append(Job((task, attempt), _expert_episode, (settings[task], seed, attempt, config.data.steps_after_success), group=task))
                attempts[task] += count
            if not round_attempts:
                break
            episodes = {key: episode for key in round_attempts if (episode := finished.get(key)) is not None}
            for result in pool.run(jobs):
                task, attempt = result.key
                if not result.ok:
                    message = f"{task} attempt {attempt} failed {result.attempts} times ({result.error}); counted as a failed attempt"
                    bar.write(f"rlmtl collect: {message}", file=sys.stderr)
                elif result.value is not None:
                    episodes[result.key] = result.value
                journal.record(task, attempt, result.value if result.ok else None)
            for task, _ in episodes:  # each attempt belongs to one round
                successes[task] += 1
            for (task, _), episode in sorted(episodes.items(), key=lambda item: item[0][1]):  # lowest attempts first
                if len(kept[task]) < wanted:
                    kept[task].append(episode)
                    bar.update(1)
            for task in tasks:
                kept[task].sort(key=lambda e: e.attempt)
    bar.close()
    shortfall = {task: wanted - len(kept[task]) for task in tasks if len(kept[task]) < wanted}
    if shortfall:
        details = ", ".join(f"{task}: {wanted - n}/{wanted} after {attempts[task]} attempts" for task, n in shortfall.items())
        print(f"rlmtl collect: shortfall of successful demos ({details})", file=sys.stderr)
    empty = [task for task in tasks if not kept[task]]
    if empty:
        raise DatasetError(f"{path}: no successful expert demo for task(s) {empty} after {max_attempts} attempts each; nothing written")
    records = [TaskRecord(task, suite.task_index(task), kept[task], wanted, attempts[task], successes[task]) for task in tasks]
    seeds = {"split": "train", "base_seed": config.data.seed, "scene_seed": "SeedSequence([0, base_seed, task_index, attempt])"}
    attrs = {**dataset_attrs(config, suite, tasks, obs_spec, seeds), "shortfall": shortfall}
    write_dataset(path, attrs, records)
    journal.remove()
    print(f"rlmtl collect: wrote {path} ({sum(len(v) for v in kept.values())} demos, {len(tasks)} tasks)", file=sys.stderr)
