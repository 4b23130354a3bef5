"""`rlmtl eval`: headless rollouts of a checkpoint in parallel worker processes.

Episode `e` of task `t` uses scene `scene_seed("eval", eval.seed, t, e)`, a stream disjoint from
the demos' ("train"), so results are reproducible and never measured on training scenes.
Episodes run in a `RobustPool`: a worker that crashes or hangs (`eval.episode_timeout_s`) is
replaced and its episode rerun with the same seed, up to `eval.max_episode_retries` times; an
episode that still fails is an *error*, reported per task and kept out of that task's success
rate. The result and its success rates are defined in `rlmtl.evaluation.results`.
With an output folder, each finished episode is appended to the episodes log (`rlmtl.evaluation.episode_log`)
so an interrupted evaluation resumes; with `world_size` > 1 the jobs are sharded over ranks.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generator, Iterator, cast

import numpy as np
import torch

from rlmtl import __version__
from rlmtl.build import agent_from_checkpoint, env_settings
from rlmtl.config import RunConfig, config_from_dict
from rlmtl.data.dataset import renderer_warning
from rlmtl.distributed import Ranks
from rlmtl.envs import EnvSettings, ProcessEnvs, Suite, make_suite, scene_seed
from rlmtl.envs.base import Observation
from rlmtl.errors import CheckpointError, OutputError, RlmtlError
from rlmtl.evaluation.episode_log import (
    EpisodeKey,
    EpisodeLog,
    existing_logs,
    file_digest,
    key_record,
    log_name,
    read_logs,
    settings_digest,
)
from rlmtl.evaluation.results import EpisodeError, EvalResult, Slot, summarise
from rlmtl.evaluation.rollout import EpisodeOutcome, rollout
from rlmtl.evaluation.settings import EvalSettings
from rlmtl.evaluation.shard import barrier, rank_group, shard
from rlmtl.evaluation.temporal_ensemble import TemporalEnsemble
from rlmtl.evaluation.videos import check_video_writer, write_videos
from rlmtl.pool import Job, JobResult, RobustPool, resolve_workers
from rlmtl.progress import progress_bar
from rlmtl.provenance import provenance
from rlmtl.training.checkpoint import CheckpointMeta, load_checkpoint, resolve_checkpoint

_WORKER: dict[str, Any] = {}


def _init_evaluator(checkpoint: str, batch_rows: int, max_envs: int) -> None:
    """Worker start: the agent, the envs it keeps (at most `max_envs`), the policy's batch size."""
    payload = load_checkpoint(checkpoint)
    _WORKER["checkpoint"] = checkpoint
    _WORKER["meta"] = payload["meta"]
    _WORKER["agent"] = agent_from_checkpoint(payload)
    _WORKER["envs"] = ProcessEnvs(max_envs=max_envs)
    _WORKER["batch_rows"] = batch_rows
    _WORKER["device"] = next(_WORKER["agent"].parameters()).device


def _close_evaluator() -> None:
    """Worker exit: shut the worker's simulators down."""
    envs = _WORKER.pop("envs", None)
    if envs is not None:
        envs.close()


def _episode_job(
    settings: EnvSettings, task_index: int, seed: int, video: bool
) -> Generator[tuple[int, Observation], np.ndarray, EpisodeOutcome]:
    """Worker job: one policy episode, on an env of its own. It yields (task index, observation)
    and receives the action: the pool answers every running episode of the worker with one
    policy call (`_act_for_all`). An action-chunking agent answers with a chunk [H, A], which the
    episode's `TemporalEnsemble` turns into the action it executes."""
    envs = _WORKER["envs"]
    env = envs.acquire(settings)
    agent = _WORKER["agent"]
    ensemble = TemporalEnsemble(agent.action_horizon, agent.ensemble_decay) if agent.action_horizon > 1 else None
    steps = rollout(env, seed, video=video)
    try:
        observation = next(steps)
        while True:
            prediction = yield task_index, observation
            observation = steps.send(prediction if ensemble is None else ensemble(prediction))
    except StopIteration as done:
        outcome, _ = done.value
    envs.release(env)
    return outcome


def _act_for_all(requests: list[tuple[int, Observation]]) -> list[np.ndarray]:
    """The pool's service: actions for the (task index, observation) of every running episode,
    from ONE `act_batch` call. The batch is padded to a fixed `batch_rows` (at least 2), so an
    episode's actions do not depend on how many other episodes, or which, share the call: CPU
    matrix kernels round a single row differently from a batch, never a row by its neighbours."""
    agent = _WORKER["agent"]
    rows = max(_WORKER["batch_rows"], len(requests), 2)
    padded = requests + [requests[-1]] * (rows - len(requests))
    device = _WORKER["device"]
    observations = {key: torch.as_tensor(np.stack([obs[key] for _, obs in padded]), device=device) for key in agent.obs_keys}
    task_ids = torch.as_tensor([task for task, _ in padded], device=device)
    actions = agent.act_batch(observations, task_ids).cpu().numpy()
    return list(actions[: len(requests)])


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
    def slot(self) -> Slot:
        return (self.task_index, self.episode)


def _outcome_from_record(record: dict[str, Any]) -> EpisodeOutcome:
    return EpisodeOutcome(
        success=bool(record["success"]),
        steps=int(record["steps"]),
        scene_seed=int(record["scene_seed"]),
        failure=str(record.get("failure", "")),
    )


def evaluate_checkpoint(
    checkpoint: str | Path, settings: EvalSettings, out: Path | None = None, shard_of: Ranks | None = None
) -> EvalResult | None:
    """Roll the checkpoint's policy out on every task; returns the eval.json content.

    `out`: append each finished episode to its episodes log there and write videos to
    `out/videos` (no folder: no log, no videos); a folder that already holds a log is refused
    unless `settings.resume`, which skips the episodes logged there for this checkpoint content,
    settings and rlmtl version. `shard_of` (a torchrun
    rank of several): run this rank's share, then (rank 0) gather every rank's log from `out` into
    the full result; the other ranks return None.
    """
    s = settings
    rank, world_size = (shard_of.rank, shard_of.world_size) if shard_of is not None else (0, 1)
    video = s.video and out is not None
    _check_request(s, video, out, world_size)
    path = resolve_checkpoint(checkpoint)
    with pinned_copy(path) as pinned:
        return _evaluate(path, pinned, s, out, rank, world_size, video)


def _evaluate(path: Path, pinned: Path, s: EvalSettings, out: Path | None, rank: int, world_size: int, video: bool) -> EvalResult | None:
    """`evaluate_checkpoint` of the checkpoint at `path`, read (by this process and every worker) from `pinned`."""
    payload = load_checkpoint(pinned)
    config = config_from_dict(payload["meta"]["config"], f"{path} config")
    tasks: list[str] = payload["meta"]["tasks"]
    suite = make_suite(config.env.backend, config.env.suite)
    _check_shapes(path, payload["meta"], config, suite)
    dataset = payload["meta"].get("dataset", {})
    warning = renderer_warning(
        dataset.get("path", "the training data"), dataset.get("renderer"), suite.renderer(config.env.options), "evaluation"
    )
    if warning and rank == 0:
        print(f"rlmtl eval: {warning}", file=sys.stderr)
    jobs = _build_jobs(config, suite, tasks, s, video)
    identity = file_digest(pinned)
    keys = {
        job.slot: EpisodeKey(identity, settings_digest(job.settings), job.task, job.episode, job.scene_seed, __version__) for job in jobs
    }
    _check_no_stale_log(out, s.resume)
    with rank_group(world_size):
        barrier(world_size)  # every rank has looked at the folder before any rank writes to it
        outcomes = _logged_outcomes(out, jobs, keys) if s.resume else {}
        if s.resume and rank == 0:
            print(f"rlmtl eval: --resume: {len(outcomes)} of {len(jobs)} episodes taken from the logs in {out}", file=sys.stderr)
        errors: dict[Slot, EpisodeError] = {}
        mine = [job for job in shard(jobs, rank, world_size, [job.record for job in jobs]) if job.slot not in outcomes]
        if mine:
            log_path = out / log_name(rank, world_size) if out is not None else None
            _run_episodes(pinned, mine, keys, s, log_path, s.progress and rank == 0, outcomes, errors)
        barrier(world_size)
    if world_size > 1:
        if rank != 0:
            return None
        assert out is not None
        _gather(out, jobs, keys, outcomes, errors)
    summary = summarise(tasks, s.episodes_per_task, outcomes, errors)
    result: EvalResult = {
        **summary,
        "checkpoint": str(path),
        "step": int(payload["step"]),
        "suite": config.env.suite,
        "backend": config.env.backend,
        "seed": s.seed,
        "provenance": provenance(),
    }
    if payload["meta"].get("provenance"):
        result["trained_with"] = payload["meta"]["provenance"]
    if video:
        assert out is not None
        fps = {task: suite.video_fps(task, config.env.options) for task in tasks}
        result["videos"] = write_videos(out / "videos", tasks, outcomes, s.video_format, fps)
    return result


@contextmanager
def pinned_copy(path: Path) -> Iterator[Path]:
    """A private copy of the checkpoint for the whole evaluation (a hard link where the file system
    allows it, else a copy, in a temporary folder removed at the end): a training run may prune or
    replace the original while its episodes run, and every worker must read the same bytes."""
    folder = Path(tempfile.mkdtemp(prefix="rlmtl-eval-"))
    pinned = folder / path.name
    try:
        try:
            os.link(path, pinned)
        except OSError:  # another file system, or links not allowed
            try:
                shutil.copyfile(path, pinned)
            except OSError as error:
                raise CheckpointError(f"{path}: cannot read the checkpoint ({error.strerror or error})") from None
        yield pinned
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _check_request(settings: EvalSettings, video: bool, out: Path | None, world_size: int) -> None:
    """RlmtlError, before any work, for mp4 videos without imageio-ffmpeg or a sharded run without `out`."""
    check_video_writer(video, settings.video_format)
    if world_size > 1 and out is None:
        raise RlmtlError("a sharded evaluation (WORLD_SIZE > 1) gathers through the episode logs: give it an output folder")


def _check_no_stale_log(out: Path | None, resume: bool) -> None:
    """OutputError unless `out` holds no episode log, or the user asked to resume from it."""
    logs = existing_logs(out)
    if logs and not resume:
        raise OutputError(
            f"{logs[0]}: the output folder holds the episode log of an earlier evaluation; pass --resume to reuse its "
            "episodes (only those of the same checkpoint content, settings and rlmtl version), or evaluate into another --out"
        )


def _check_shapes(path: Path, meta: CheckpointMeta, config: RunConfig, suite: Suite) -> None:
    """CheckpointError, before any rollout, when the agent's observation or action shapes are not
    those the suite's environments produce and take (a worker would crash on every episode)."""
    produced = suite.observation_spec(list(config.env.cameras), config.env.image_size)
    for key, shape in meta["obs_shapes"].items():
        if key not in produced:
            raise CheckpointError(
                f"{path}: the agent reads observation {key!r}, which {config.env.suite} does not produce ({', '.join(produced)})"
            )
        if tuple(shape) != tuple(produced[key].shape):
            raise CheckpointError(
                f"{path}: the agent reads {key!r} of shape {tuple(shape)} but {config.env.suite} produces {tuple(produced[key].shape)}"
            )
    taken = tuple(suite.action_spec().shape)
    if (meta["action_dim"],) != taken:
        raise CheckpointError(
            f"{path}: the agent acts in {meta['action_dim']} dimensions but {config.env.suite} takes actions of shape {taken}"
        )


def _build_jobs(config: RunConfig, suite: Suite, tasks: list[str], settings: EvalSettings, video: bool) -> list[EpisodeJob]:
    """Every (task, episode) of the evaluation, task-major; the first `video_episodes` of a task record video."""
    s = settings
    camera = s.video_camera or suite.default_camera
    jobs: list[EpisodeJob] = []
    for index, task in enumerate(tasks):
        env = env_settings(config, task, video_camera=camera if video else "", video_size=s.video_size if video else 0)
        for episode in range(s.episodes_per_task):
            scene = scene_seed("eval", s.seed, suite.task_index(task), episode)
            jobs.append(EpisodeJob(index, task, episode, scene, video and episode < s.video_episodes, env))
    return jobs


def _logged_outcomes(log_dir: Path | None, jobs: list[EpisodeJob], keys: dict[Slot, EpisodeKey]) -> dict[Slot, EpisodeOutcome]:
    """The outcomes of the jobs already logged in `log_dir` without an error (none without a
    folder); video episodes are not reused, they rerun for their frames."""
    logged = read_logs(log_dir) if log_dir is not None else {}
    outcomes: dict[Slot, EpisodeOutcome] = {}
    for job in jobs:
        record = logged.get(keys[job.slot])
        if record is not None and not record.get("error") and not job.record:
            outcomes[job.slot] = _outcome_from_record(record)
    return outcomes


def _run_episodes(
    checkpoint: Path,
    jobs: list[EpisodeJob],
    keys: dict[Slot, EpisodeKey],
    settings: EvalSettings,
    log_path: Path | None,
    progress: bool,
    outcomes: dict[Slot, EpisodeOutcome],
    errors: dict[Slot, EpisodeError],
) -> None:
    """Run `jobs` in a `RobustPool`, adding each to `outcomes` or (failed on every rerun) `errors`
    and appending it to the episodes log at `log_path` (when given) as it finishes."""
    s = settings
    log = EpisodeLog(log_path) if log_path is not None else None
    bar = progress_bar(len(jobs), "eval", "episode", progress)
    workers = min(resolve_workers(s.workers), len(jobs))
    per_worker = min(s.envs_per_worker, -(-len(jobs) // workers), _simulators_per_process(jobs[0].settings))
    pool = RobustPool(
        workers,
        _init_evaluator,
        (str(checkpoint), per_worker, per_worker + len({job.settings for job in jobs})),  # an env per task, and a batch's worth more
        s.episode_timeout_s,
        s.max_episode_retries,
        _close_evaluator,
        jobs_per_worker=per_worker,
        service=_act_for_all,
    )
    by_slot = {job.slot: job for job in jobs}
    try:
        with pool:
            arguments = ((job, (job.settings, job.task_index, job.scene_seed, job.record)) for job in jobs)
            for result in pool.run(Job(job.slot, _episode_job, args, group=job.task_index) for job, args in arguments):
                job = by_slot[cast(Slot, result.key)]
                entry = _record_result(job, result, keys[job.slot], outcomes, errors, bar)
                if log is not None:
                    log.append(entry)
                bar.update(1)
    finally:
        bar.close()
        if log is not None:
            log.close()


def _simulators_per_process(settings: EnvSettings) -> int:
    """How many envs of this backend one process may hold (no limit: a large number)."""
    limit = make_suite(settings.backend, settings.suite).simulators_per_process
    return 1_000_000 if limit is None else limit


def _record_result(
    job: EpisodeJob,
    result: JobResult,
    key: EpisodeKey,
    outcomes: dict[Slot, EpisodeOutcome],
    errors: dict[Slot, EpisodeError],
    bar: Any,
) -> dict[str, Any]:
    """File one finished job in `outcomes` or `errors` (reporting an error on `bar`); returns its log record."""
    entry: dict[str, Any] = {**key_record(key), "attempts": result.attempts}
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
    return entry


def _gather(
    log_dir: Path,
    jobs: list[EpisodeJob],
    keys: dict[Slot, EpisodeKey],
    outcomes: dict[Slot, EpisodeOutcome],
    errors: dict[Slot, EpisodeError],
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
