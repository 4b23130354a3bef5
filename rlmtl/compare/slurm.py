"""The SLURM launcher: one job per run, submitted with submitit's AutoExecutor (no sbatch script of rlmtl's).

Each pending run becomes a job named `rlmtl-<run>` with the spec's `slurm:` resources (partition,
timeout_min, gpus_per_node, cpus_per_task, mem_gb, account, qos, constraint, setup, additional_parameters);
the job calls `rlmtl.compare.job.execute` (its lock, resume, dataset, `rlmtl run`) with
`cpus_per_task` threads. Its files (pickles, logs `<job>_0_log.out/err`) are in `<out>/slurm/`, and
the job id of each run in `<out>/slurm/jobs.json`. On a rerun a run whose job sacct reports as still
queued or running (any state submitit counts as unfinished, UNKNOWN included) is not submitted again;
a job that ended without the run's eval.json (failed, cancelled, out of time) is submitted again and
the run resumes from its checkpoints. The job is `Checkpointable`: on SLURM's time-limit signal
submitit requeues it, and the requeued job resumes the run.

Datasets: the first job of a setting collects its dataset and the others wait for it (the dataset
lock); to keep those allocations from waiting, run `rlmtl collect CONFIG` first.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from rlmtl.atomic import write_text_atomic
from rlmtl.compare.job import EXIT_BUSY, execute, make_request
from rlmtl.compare.runs import PlannedRun, run_lock_holder, run_state
from rlmtl.compare.spec import SlurmOptions
from rlmtl.errors import RlmtlError

# sacct states of a job that is not over (submitit's own list of unfinished states, and SLURM's transient ones)
ACTIVE_STATES = {
    "READY",
    "PENDING",
    "RUNNING",
    "UNKNOWN",
    "REQUEUED",
    "COMPLETING",
    "PREEMPTED",
    "CONFIGURING",
    "RESIZING",
    "SUSPENDED",
    "REQUEUE_FED",
    "REQUEUE_HOLD",
    "SIGNALING",
    "STAGE_OUT",
}

try:
    from submitit.helpers import Checkpointable
except ImportError:  # the `compare` extra is not installed: launching checks it and says so
    Checkpointable = object  # type: ignore[assignment,misc]


class RunJob(Checkpointable):  # type: ignore[misc,valid-type]
    """The callable a run's job executes (pickled by submitit); requeued as it is on a time-out."""

    def __init__(self, request: dict[str, Any]) -> None:
        self.request = request

    def __call__(self) -> int:
        import submitit

        code = execute(self.request, job_id=submitit.JobEnvironment().job_id)
        if code not in (0, EXIT_BUSY):  # a failed run fails its job (sacct FAILED), with rlmtl's line in the job's log
            raise RlmtlError(f"rlmtl run {self.request['run']['name']} exited with code {code}")
        return code


def executor_parameters(options: SlurmOptions) -> dict[str, Any]:
    """AutoExecutor.update_parameters arguments for `options` (generic names, slurm_* for the rest)."""
    parameters: dict[str, Any] = {
        "timeout_min": options.timeout_min,
        "cpus_per_task": options.cpus_per_task,
        "nodes": 1,
        "tasks_per_node": 1,
    }
    if options.gpus_per_node:
        parameters["gpus_per_node"] = options.gpus_per_node
    if options.mem_gb is not None:
        parameters["mem_gb"] = options.mem_gb
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(options, key) is not None:
            parameters[f"slurm_{key}"] = getattr(options, key)
    if options.setup:
        parameters["slurm_setup"] = list(options.setup)
    if options.additional_parameters:
        parameters["slurm_additional_parameters"] = dict(options.additional_parameters)
    return parameters


def job_states(job_ids: list[str]) -> dict[str, str]:
    """The sacct state of each job (first word: 'CANCELLED by 0' is CANCELLED), in one sacct call."""
    from submitit.slurm.slurm import SlurmJob

    watcher = SlurmJob.watcher  # submitit's shared sacct reader
    for job_id in job_ids:
        watcher.register_job(job_id)
    if job_ids:
        watcher.update()
    return {job_id: (watcher.get_state(job_id, mode="cache").split() or ["UNKNOWN"])[0].upper() for job_id in job_ids}


class SlurmLauncher:
    """Submits the pending runs of a comparison to SLURM (see the module docstring)."""

    def __init__(self, out: Path, options: SlurmOptions) -> None:
        self.out = out
        self.options = options
        self.folder = out / "slurm"
        self.jobs_path = self.folder / "jobs.json"
        self.jobs: dict[str, str] = json.loads(self.jobs_path.read_text()) if self.jobs_path.is_file() else {}

    def _save_jobs(self) -> None:
        write_text_atomic(self.jobs_path, json.dumps(self.jobs, indent=1, sort_keys=True) + "\n")

    def submit(self, pending: list[PlannedRun]) -> dict[str, str]:
        """Submit each pending run that has no unfinished job; returns {run name: job id} of the runs
        now queued or running."""
        import submitit

        states = job_states([self.jobs[run.name] for run in pending if run.name in self.jobs])
        active: dict[str, str] = {}
        executor = None
        for run in pending:
            job_id = self.jobs.get(run.name)
            if job_id is not None and states.get(job_id) in ACTIVE_STATES:
                print(f"rlmtl compare: {run.name}: job {job_id} is {states[job_id]}; not submitted again", file=sys.stderr)
                active[run.name] = job_id
                continue
            holder = run_lock_holder(self.out, run)
            if holder is not None:
                print(f"rlmtl compare: {run.name}: {holder}; not submitted", file=sys.stderr)
                continue
            if executor is None:
                executor = submitit.AutoExecutor(folder=self.folder, cluster="slurm")
                executor.update_parameters(**executor_parameters(self.options))
            executor.update_parameters(name=f"rlmtl-{run.name}")
            job = executor.submit(RunJob(make_request(run, self.out, self.options.cpus_per_task, "slurm")))
            self.jobs[run.name] = active[run.name] = str(job.job_id)
            self._save_jobs()
            print(f"rlmtl compare: {run.name}: submitted as job {job.job_id}", file=sys.stderr)
        return active

    def wait(self, active: dict[str, str]) -> dict[str, str]:
        """Poll sacct every `poll_s` until every job in `active` has ended; returns {name: why} of the
        runs whose job ended without their eval.json."""
        failed: dict[str, str] = {}
        runs = dict(active)
        while runs:
            time.sleep(self.options.poll_s)
            states = job_states(list(runs.values()))
            for name, job_id in list(runs.items()):
                if states[job_id] in ACTIVE_STATES:
                    continue
                del runs[name]
                print(f"rlmtl compare: {name}: job {job_id} ended ({states[job_id]})", file=sys.stderr)
                failed_why = f"job {job_id} ended {states[job_id]}, log {self.folder / f'{job_id}_0_log.err'}"
                failed[name] = failed_why
        return failed

    def finished_without_result(self, failed: dict[str, str], pending: list[PlannedRun]) -> dict[str, str]:
        """`failed` without the runs that did write their eval.json."""
        by_name = {run.name: run for run in pending}
        return {name: why for name, why in failed.items() if run_state(by_name[name])[0] != "done"}
