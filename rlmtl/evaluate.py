"""`rlmtl eval`: headless rollouts of a checkpoint in parallel worker processes.

Episode `e` of task `t` uses scene `scene_seed("eval", eval.seed, t, e)`, a stream disjoint from
the demos' ("train"), so results are reproducible and never measured on training scenes.
Success per task is the fraction of episodes solved at any step, with a 95% Wilson interval;
`overall` is the mean over tasks (every task has the same number of episodes).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from envs import EnvSettings, make_suite, scene_seed
from rlmtl.atomic import atomic_path, write_text_atomic
from rlmtl.build import agent_from_checkpoint, env_settings
from rlmtl.checkpoint import load_checkpoint, resolve_checkpoint
from rlmtl.config import config_from_dict
from rlmtl.errors import RlmtlError
from rlmtl.rollout import EpisodeOutcome, run_episode
from rlmtl.workers import make_executor, resolve_workers

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


def _episode_job(settings: EnvSettings, task_index: int, episode: int, seed: int, video: bool) -> tuple[int, int, EpisodeOutcome]:
    """Worker job: one policy episode."""
    envs = _WORKER["envs"]
    if settings not in envs:
        suite = make_suite(settings.backend, settings.suite)
        envs[settings] = suite.make_env(settings)
    agent = _WORKER["agent"]
    outcome, _ = run_episode(envs[settings], lambda obs: agent.act(obs, task_index), seed, video=video)
    return task_index, episode, outcome


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
) -> dict[str, Any]:
    """Roll the checkpoint's policy out on every task; returns the eval.json content."""
    if video and video_format == "mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise RlmtlError("eval.video_format=mp4 needs imageio-ffmpeg (pip install imageio-ffmpeg); or use gif") from None
    path = resolve_checkpoint(checkpoint)
    payload = load_checkpoint(path)
    meta = payload["meta"]
    config = config_from_dict(meta["config"], f"{path} config")
    tasks: list[str] = meta["tasks"]
    suite = make_suite(config.env.backend, config.env.suite)
    camera = video_camera or suite.default_camera
    jobs = []
    for task in tasks:
        index = tasks.index(task)
        suite_index = suite.task_index(task)
        for episode in range(episodes_per_task):
            record = video and episode < video_episodes
            settings = env_settings(config, task, video_camera=camera if video else "", video_size=video_size if video else 0)
            jobs.append((settings, index, episode, scene_seed("eval", seed, suite_index, episode), record))
    outcomes: dict[tuple[int, int], EpisodeOutcome] = {}
    count = min(resolve_workers(workers), len(jobs))
    bar = tqdm(total=len(jobs), desc="eval", unit="episode", disable=not progress, file=sys.stderr)
    with make_executor(count, _init_evaluator, (str(path),)) as pool:
        futures = [pool.submit(_episode_job, *job) for job in jobs]
        for future in futures:
            task_index, episode, outcome = future.result()
            outcomes[(task_index, episode)] = outcome
            bar.update(1)
    bar.close()
    result = summarise(tasks, episodes_per_task, outcomes)
    result.update(checkpoint=str(path), step=int(payload["step"]), suite=config.env.suite, backend=config.env.backend, seed=seed)
    if video and video_dir is not None:
        result["videos"] = write_videos(video_dir, tasks, outcomes, video_format)
    return result


def summarise(tasks: list[str], episodes_per_task: int, outcomes: dict[tuple[int, int], EpisodeOutcome]) -> dict[str, Any]:
    """Per-task and overall success with 95% intervals, plus every episode's record."""
    per_task: dict[str, Any] = {}
    episodes = []
    for index, task in enumerate(tasks):
        results = [outcomes[(index, e)] for e in range(episodes_per_task)]
        successes = sum(o.success for o in results)
        low, high = wilson_interval(successes, episodes_per_task)
        per_task[task] = {
            "success_rate": successes / episodes_per_task,
            "successes": successes,
            "episodes": episodes_per_task,
            "ci95": [low, high],
            "mean_steps": float(np.mean([o.steps for o in results])),
        }
        episodes += [{"task": task, "episode": e, "scene_seed": o.scene_seed, "success": o.success, "steps": o.steps} for e, o in enumerate(results)]
    total = sum(row["successes"] for row in per_task.values())
    trials = episodes_per_task * len(tasks)
    low, high = wilson_interval(total, trials)
    overall = {"success_rate": float(np.mean([r["success_rate"] for r in per_task.values()])), "successes": total, "episodes": trials, "ci95": [low, high]}
    return {"per_task": per_task, "overall": overall, "episodes": episodes}


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
    """The per-task table of an eval result as Markdown."""
    lines = ["| task | success | 95% CI | episodes | mean steps |", "|---|---|---|---|---|"]
    for task, row in result["per_task"].items():
        low, high = row["ci95"]
        lines.append(f"| {task} | {row['success_rate']:.2f} | {low:.2f}–{high:.2f} | {row['episodes']} | {row['mean_steps']:.0f} |")
    overall = result["overall"]
    low, high = overall["ci95"]
    lines.append(f"| **mean** | **{overall['success_rate']:.3f}** | {low:.2f}–{high:.2f} | {overall['episodes']} | |")
    return "\n".join(lines) + "\n"


def write_results(folder: Path, result: dict[str, Any]) -> None:
    """eval.json and eval.md in `folder`, atomically."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    write_text_atomic(folder / "eval.json", json.dumps(result, indent=2) + "\n")
    header = f"# Evaluation of `{result['checkpoint']}` (step {result['step']})\n\n"
    write_text_atomic(folder / "eval.md", header + results_markdown(result))


