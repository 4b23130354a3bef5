"""`rlmtl eval`: headless rollouts of a checkpoint in parallel worker processes.

Episode `e` of task `t` uses scene `scene_seed("eval", eval.seed, t, e)`, a stream disjoint from
the demos' ("train"), so results are reproducible and never measured on training scenes.
Episodes run in a `RobustPool`: a worker that crashes or hangs (`eval.episode_timeout_s`) is
replaced and its episode rerun with the same seed, up to `eval.max_episode_retries` times; an
episode that still fails is an *error*, reported per task and kept out of the success rate.
Success per task is the fraction of the episodes that ran (errors excluded) solved at any step,
with a 95% Wilson interval; `overall` is the mean over tasks with at least one episode.
Failures are counted by kind: the env's `info["failure"]` (e.g. an IK error) or `step_limit`.
With an output folder, each finished episode is appended to the episodes log (`rlmtl.eval_log`)
so an interrupted evaluation resumes; with `world_size` > 1 the jobs are sharded over ranks.
"""

from __future__ import annotations

import collections
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from envs import EnvSettings, make_suite, scene_seed
from rlmtl.atomic import atomic_path, write_text_atomic
from rlmtl.build import agent_from_checkpoint, env_settings
from rlmtl.checkpoint import load_checkpoint, resolve_checkpoint
from rlmtl.config import config_from_dict
from rlmtl.errors import EpisodeErrors, RlmtlError
from rlmtl.eval_log import EpisodeKey, EpisodeLog, file_digest, key_record, log_name, read_logs, settings_digest
from rlmtl.eval_pool import Job, RobustPool
from rlmtl.eval_shard import barrier, shard
from rlmtl.rollout import EpisodeOutcome, run_episode
from rlmtl.workers import resolve_workers

_WORKER: dict[str, Any] = {}


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a success rate."""
    if trials == 0:
        return (0.0, 1.0)
    p = successes / trials
    denominator = 1 + z * z / trials
    center = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return (max(0.0, center - half), min(1.0, center + half))


def _init_evaluator(checkpoint: str) -> None:
    payload = load_checkpoint(checkpoint)
    _WORKER["checkpoint"] = checkpoint
    _WORKER["meta"] = payload["meta"]
    _WORKER["agent"] = agent_from_checkpoint(payload)
    _WORKER["envs"] = {}


def _episode_job(settings: EnvSettings, task_index: int, seed: int, video: bool) -> EpisodeOutcome:
    """Worker job: one policy episode."""
    envs = _WORKER["envs"]
    if settings not in envs:
        suite = make_suite(settings.backend, settings.suite)
        envs[settings] = suite.make_env(settings)
    agent = _WORKER["agent"]
    outcome, _ = run_episode(envs[settings], lambda obs: agent.act(obs, task_index), seed, video=video)
    return outcome


@dataclass(frozen=True)
class EpisodeJob:
    """One evaluation episode to run."""

    task_index: int
    task: str
    episode: int
    scene_seed: int
    record: bool
    settings: EnvSettings

    @property
    def slot(self) -> tuple[int, int]:
        return (self.task_index, self.episode)


def _outcome_from_record(record: dict[str, Any]) -> EpisodeOutcome:
    return EpisodeOutcome(
        success=bool(record["success"]),
        steps=int(record["steps"]),
        scene_seed=int(record["scene_seed"]),
        failure=str(record.get("failure", "")),
    )


def evaluate_checkpoint(
    checkpoint: str | Path,
    episodes_per_task: int,
    workers: int = 0,
    seed: int = 0,
    video: bool = False,
    video_episodes: int = 1,
    video_camera: str = "",
    video_size: int = 128,
    video_dir: Path | None = None,
    video_format: str = "gif",
    progress: bool = True,
    episode_timeout_s: float = 300.0,
    max_episode_retries: int = 2,
    log_dir: Path | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, Any] | None:
    """Roll the checkpoint's policy out on every task; returns the eval.json content.

    `log_dir`: append each finished episode to its episodes log and skip the episodes already
    logged there. `rank`/`world_size` > 1: run this rank's share, then (rank 0) gather every
    rank's log from `log_dir` into the full result; the other ranks return None.
    """
    if video and video_format == "mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise RlmtlError("eval.video_format=mp4 needs imageio-ffmpeg (pip install imageio-ffmpeg); or use gif") from None
    if world_size > 1 and log_dir is None:
        raise RlmtlError("a sharded evaluation (WORLD_SIZE > 1) gathers through the episode logs: give it an output folder")
    path = resolve_checkpoint(checkpoint)
    payload = load_checkpoint(path)
    meta = payload["meta"]
    config = config_from_dict(meta["config"], f"{path} config")
    tasks: list[str] = meta["tasks"]
    suite = make_suite(config.env.backend, config.env.suite)
    camera = video_camera or suite.default_camera
    jobs: list[EpisodeJob] = []
    for index, task in enumerate(tasks):
        settings = env_settings(config, task, video_camera=camera if video else "", video_size=video_size if video else 0)
        for episode in range(episodes_per_task):
            scene = scene_seed("eval", seed, suite.task_index(task), episode)
            jobs.append(EpisodeJob(index, task, episode, scene, video and episode < video_episodes, settings))
    identity = file_digest(path)
    keys = {job.slot: EpisodeKey(identity, settings_digest(job.settings), job.task, job.episode, job.scene_seed) for job in jobs}
    outcomes: dict[tuple[int, int], EpisodeOutcome] = {}
    errors: dict[tuple[int, int], dict[str, Any]] = {}
    logged = read_logs(log_dir) if log_dir is not None else {}
    for job in jobs:
        record = logged.get(keys[job.slot])
        if record is not None and not record.get("error") and not job.record:  # video episodes rerun for their frames
            outcomes[job.slot] = _outcome_from_record(record)
    mine = [job for job in shard(jobs, rank, world_size, [job.record for job in jobs]) if job.slot not in outcomes]
    if mine:
        log = EpisodeLog(log_dir / log_name(rank, world_size)) if log_dir is not None else None
        bar = tqdm(total=len(mine), desc="eval", unit="episode", disable=not progress, file=sys.stderr)
        pool = RobustPool(min(resolve_workers(workers), len(mine)), _init_evaluator, (str(path),), episode_timeout_s, max_episode_retries)
        by_slot = {job.slot: job for job in mine}
        try:
            with pool:
                for result in pool.run(
                    Job(job.slot, _episode_job, (job.settings, job.task_index, job.scene_seed, job.record)) for job in mine
                ):
                    job = by_slot[result.key]
                    entry = {**key_record(keys[job.slot]), "attempts": result.attempts}
                    if result.ok:
                        outcome: EpisodeOutcome = result.value
                        outcomes[job.slot] = outcome
                        entry.update(success=outcome.success, steps=outcome.steps, failure=outcome.failure, error="")
                    else:
                        errors[job.slot] = {"scene_seed": job.scene_seed, "error": result.error, "attempts": result.attempts}
                        entry.update(error=result.error)
                        bar.write(
                            f"rlmtl eval: ERROR {job.task} episode {job.episode} (seed {job.scene_seed}) failed {result.attempts} times: {result.error}"
                        )
                    if log is not None:
                        log.append(entry)
                    bar.update(1)
        finally:
            bar.close()
            if log is not None:
                log.close()
    if world_size > 1:
        barrier(world_size)
        if rank != 0:
            return None
        assert log_dir is not None
        _gather(log_dir, jobs, keys, outcomes, errors)
    result = summarise(tasks, episodes_per_task, outcomes, errors)
    result.update(checkpoint=str(path), step=int(payload["step"]), suite=config.env.suite, backend=config.env.backend, seed=seed)
    if video and video_dir is not None:
        result["videos"] = write_videos(video_dir, tasks, outcomes, video_format)
    return result


def _gather(
    log_dir: Path,
    jobs: list[EpisodeJob],
    keys: dict[tuple[int, int], EpisodeKey],
    outcomes: dict[tuple[int, int], EpisodeOutcome],
    errors: dict[tuple[int, int], dict[str, Any]],
) -> None:
    """Rank 0: fill in the other ranks' episodes from every log in `log_dir`."""
    merged = read_logs(log_dir)
    for job in jobs:
        if job.slot in outcomes or job.slot in errors:
            continue
        record = merged.get(keys[job.slot])
        if record is None:
            raise RlmtlError(
                f"{log_dir}: no rank logged {job.task} episode {job.episode}; every rank must write to the same (shared) output folder"
            )
        if record.get("error"):
            errors[job.slot] = {"scene_seed": job.scene_seed, "error": record["error"], "attempts": record.get("attempts", 0)}
        else:
            outcomes[job.slot] = _outcome_from_record(record)


def summarise(
    tasks: list[str],
    episodes_per_task: int,
    outcomes: dict[tuple[int, int], EpisodeOutcome],
    errors: dict[tuple[int, int], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Per-task and overall success with 95% intervals, failures by kind, errors, every episode.

    Each (task, episode) must be in exactly one of `outcomes` and `errors`. A task's
    `success_rate` is over its `episodes` (those that ran); `errors` episodes are not in it.
    """
    errors = errors or {}
    per_task: dict[str, Any] = {}
    episodes: list[dict[str, Any]] = []
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
        successes = sum(o.success for o in ran)
        trials = len(ran)
        low, high = wilson_interval(successes, trials)
        failures = collections.Counter(o.failure for o in ran if not o.success)
        per_task[task] = {
            "success_rate": successes / trials if trials else 0.0,
            "successes": successes,
            "episodes": trials,
            "errors": task_errors,
            "episodes_requested": episodes_per_task,
            "ci95": [low, high],
            "mean_steps": float(np.mean([o.steps for o in ran])) if ran else 0.0,
            "failures": dict(sorted(failures.items())),
        }
    total = sum(row["successes"] for row in per_task.values())
    trials = sum(row["episodes"] for row in per_task.values())
    low, high = wilson_interval(total, trials)
    rates = [row["success_rate"] for row in per_task.values() if row["episodes"]]
    overall = {
        "success_rate": float(np.mean(rates)) if rates else 0.0,
        "successes": total,
        "episodes": trials,
        "errors": sum(row["errors"] for row in per_task.values()),
        "ci95": [low, high],
    }
    return {"per_task": per_task, "overall": overall, "episodes": episodes}


def episode_errors(result: dict[str, Any]) -> EpisodeErrors | None:
    """The error to raise (exit 6) when some episodes of `result` ended in an error, else None."""
    count = result["overall"].get("errors", 0)
    if not count:
        return None
    lines = [f"{count} episode{'s' if count != 1 else ''} failed on every rerun (worker crash or hang) and are NOT in the success rates:"]
    for row in result["episodes"]:
        if "error" in row:
            lines.append(
                f"  {row['task']} episode {row['episode']} (scene seed {row['scene_seed']}, {row['attempts']} attempts): {row['error']}"
            )
    return EpisodeErrors("\n".join(lines))


def write_videos(folder: Path, tasks: list[str], outcomes: dict[tuple[int, int], EpisodeOutcome], video_format: str) -> dict[str, str]:
    """One video per task (its recorded episodes back to back), written atomically."""
    import imageio.v2 as imageio

    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    for index, task in enumerate(tasks):
        frames = [frame for (t, _), o in sorted(outcomes.items()) if t == index for frame in o.frames]
        if not frames:
            continue
        target = folder / f"{task}.{video_format}"
        with atomic_path(target) as tmp:
            if video_format == "gif":
                imageio.mimsave(tmp, frames[::2], format="GIF", duration=1000 / 40, loop=0)
            else:
                imageio.mimsave(tmp, frames, format="FFMPEG", fps=40)
        written[task] = str(target)
    return written


def results_markdown(result: dict[str, Any]) -> str:
    """The per-task table of an eval result as Markdown: success over the episodes that ran,
    errors (episodes that never finished, not in the rate) and failures by kind."""
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
            f"**{overall['errors']} episode(s) ended in an error (worker crash or hang on every rerun) and are not counted in the success rates.**",
        ]
    return "\n".join(lines) + "\n"


def write_results(folder: Path, result: dict[str, Any]) -> None:
    """eval.json and eval.md in `folder`, atomically."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "eval.json", json.dumps(result, indent=2) + "\n")
    header = f"# Evaluation of `{result['checkpoint']}` (step {result['step']})\n\n"
    write_text_atomic(folder / "eval.md", header + results_markdown(result))
