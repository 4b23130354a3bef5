"""`RobustPool` with batched jobs: one service call per step for every job a worker holds, each job
still a job of its own (result, reruns, attempts); a crash or hang is charged to the job the worker
was running and the others it held rerun at the attempt they had; a hang is a time without
progress, not a long batch.

The jobs (tests/helpers/batched_jobs.py) inject real faults in spawn-started workers.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import batched_jobs
import pytest

from rlmtl.pool import Job, RobustPool

HELPERS = Path(__file__).parent / "helpers"


@pytest.fixture
def folder(monkeypatch, tmp_path):
    monkeypatch.setenv(batched_jobs.FOLDER_ENV, str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HELPERS), os.environ.get("PYTHONPATH", "")]))
    if str(HELPERS) not in sys.path:
        sys.path.insert(0, str(HELPERS))
    return tmp_path


def run(jobs: list[Job], workers: int = 1, per_worker: int = 3, timeout_s: float = 0.0, service=batched_jobs.service):
    with RobustPool(workers, timeout_s=timeout_s, max_retries=2, jobs_per_worker=per_worker, service=service) as pool:
        return {result.key: result for result in pool.run(jobs)}


def episodes(names: str, steps: int = 5, faults: dict[str, str] | None = None) -> list[Job]:
    faults = faults or {}
    return [Job(name, batched_jobs.episode, (name, steps, faults.get(name, ""))) for name in names]


def batch_sizes(folder: Path) -> list[int]:
    return [int(line) for line in (folder / "batches").read_text().split()]


def test_a_worker_answers_all_its_jobs_with_one_service_call_per_step(folder):
    results = run(episodes("abcdef"), per_worker=3)
    assert all(r.ok and r.attempts == 1 and r.value == [1, 2, 3, 4, 5] for r in results.values())
    assert batch_sizes(folder) == [3] * 10  # two rounds of three jobs, five steps each


def test_plain_jobs_still_run_one_at_a_time_in_a_batched_pool(folder):
    jobs = [Job(name, batched_jobs.plain, (name,)) for name in "xyz"]
    results = run(jobs, per_worker=4)
    assert {k: r.value for k, r in results.items()} == {"x": "X", "y": "Y", "z": "Z"}


@pytest.mark.parametrize("fault", ["exit", "raise"])
def test_a_crash_is_charged_to_its_job_and_the_others_rerun_at_their_attempt(folder, fault):
    results = run(episodes("abc", faults={"b": fault}), per_worker=3)
    assert all(r.ok and r.value == [1, 2, 3, 4, 5] for r in results.values())
    assert {k: r.attempts for k, r in results.items()} == {"a": 1, "b": 2, "c": 1}


def test_a_hang_is_charged_to_the_job_that_hung(folder):
    results = run(episodes("abc", faults={"c": "hang"}), per_worker=3, timeout_s=3)
    assert all(r.ok for r in results.values())
    assert {k: r.attempts for k, r in results.items()} == {"a": 1, "b": 1, "c": 2}


def test_a_failing_service_call_is_charged_to_every_job_it_served(folder):
    results = run(episodes("ab"), per_worker=2, service=batched_jobs.failing_service)
    assert {k: (r.ok, r.attempts) for k, r in results.items()} == {"a": (True, 2), "b": (True, 2)}


def test_a_batch_that_keeps_progressing_is_not_a_hang(folder):
    # three jobs of 12 steps, 0.25 s apart: 3 s per job, three times the timeout, never 1 s without progress
    jobs = [Job(name, batched_jobs.slow_episode, (name, 12, 0.25)) for name in "abc"]
    results = run(jobs, per_worker=3, timeout_s=1.0)
    assert all(r.ok and r.attempts == 1 for r in results.values())


def test_without_a_shared_progress_record_a_crash_is_charged_to_every_job_the_worker_held(folder, monkeypatch):
    # where the system refuses the record's backing file (a full /dev/shm, a file-size limit)
    import rlmtl.pool

    monkeypatch.setattr(rlmtl.pool, "_progress_record", lambda context: None)
    results = run(episodes("abc", faults={"b": "exit"}), per_worker=3)
    assert {k: (r.ok, r.attempts) for k, r in results.items()} == {"a": (True, 2), "b": (True, 2), "c": (True, 2)}


def test_a_batched_worker_fills_the_places_of_tasks_that_ran_out_with_the_tasks_left():
    from collections import Counter

    from rlmtl.pool import _Pending

    jobs = [Job(f"{group}{index}", batched_jobs.plain, (), group=group) for group in ("long", "short") for index in range(4)]
    pending = _Pending(jobs)
    taken = [pending.take_for_batch(Counter(), set(), 4) for _ in range(4)]  # two groups left: at most 2 of each
    assert sorted(job.group for job in taken) == ["long", "long", "short", "short"]
    assert pending.take_for_batch(Counter(long=2, short=2), set(), 4) is None
    for _ in range(2):
        assert pending.take_for_batch(Counter(long=2, short=1), set(), 4).group == "short"
    # every "short" job has run: "long" is the only group left, so it may fill all four places
    running = Counter(long=2)
    for _ in range(2):
        job = pending.take_for_batch(running, set(), 4)
        assert job is not None and job.group == "long"
        running[job.group] += 1
    assert not pending
