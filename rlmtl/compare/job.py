"""One run of a comparison, executed where its launcher put it (a local process or a SLURM job).

`execute(request)` takes the run's lock (`<out>/state/<name>.lock`; held by another process: exit
`EXIT_BUSY`, nothing done), reads the run's state again under it (done: nothing to do; partial:
moved aside; resume: `--resume`), waits for or collects the setting's dataset (one collection per
dataset: a run whose dataset another run is collecting waits for it), then runs `rlmtl run` in this
process and appends the attempt to `<out>/state/<name>.jsonl`. The thread limits are set in the
environment before torch is imported. `python -m rlmtl.compare.job REQUEST_JSON` is how the local
launcher starts it; the SLURM launcher calls `execute` inside the job.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from rlmtl.compare.runs import PlannedRun, append_attempt, lock_name, move_aside, run_state, state_folder

EXIT_BUSY = 75  # EX_TEMPFAIL: the run's lock is held by another process; try again later
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
DATASET_POLL_S = 2.0


def limit_threads(threads: int, environment: dict[str, str] | os._Environ = os.environ) -> None:
    """Set OpenMP's and MKL's thread counts to `threads` (0: leave them) in `environment`."""
    if threads > 0:
        for variable in THREAD_VARIABLES:
            environment[variable] = str(threads)


def make_request(run: PlannedRun, out: Path, threads: int, launcher: str) -> dict[str, Any]:
    return {"run": run.to_dict(), "out": str(out), "threads": threads, "launcher": launcher}


def _stop_on_sigterm() -> None:
    """SIGTERM ends the run like Ctrl-C (rlmtl's commands stop their pools and return 130), so the attempt is recorded."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def execute(request: dict[str, Any], job_id: str | None = None) -> int:
    """Run `request`'s run (see the module docstring); returns the exit code of `rlmtl run`, 0 when
    it was already done, EXIT_BUSY when another process holds its lock."""
    run, out, threads = PlannedRun.from_dict(request["run"]), Path(request["out"]), int(request["threads"])
    limit_threads(threads)
    from rlmtl.errors import OutputError
    from rlmtl.folder_lock import FolderLock
    from rlmtl.plugins import load_plugins

    load_plugins()
    state_folder(out).mkdir(parents=True, exist_ok=True)
    lock = FolderLock(state_folder(out), f"rlmtl compare: run {run.name}", lock_name(run))
    try:
        lock.acquire()
    except OutputError as error:
        print(f"rlmtl compare: {run.name}: {error}", file=sys.stderr)
        return EXIT_BUSY
    try:
        state, why = run_state(run)
        print(f"rlmtl compare: {run.name}: {state} ({why})", file=sys.stderr)
        if state == "done":
            return 0
        if state == "foreign":
            return 2
        if state == "partial":
            print(f"rlmtl compare: {run.name}: moved to {move_aside(run, out)}", file=sys.stderr)
        _dataset_ready(run)
        return _run_and_record(run, out, threads, state == "resume", request.get("launcher", "local"), job_id)
    finally:
        lock.release()


def _dataset_ready(run: PlannedRun) -> None:
    """Collect the run's dataset, or wait while another process collects it (collect's own lock)."""
    from rlmtl.config import dataset_path, load_config
    from rlmtl.data.collect import collect, dataset_is_current
    from rlmtl.errors import OutputError
    from rlmtl.folder_lock import lock_holder

    config = load_config(run.config, list(run.overrides))
    path = dataset_path(config)
    said = False
    while not dataset_is_current(path, config):
        holder = lock_holder(path.parent, f".{path.name}.lock")
        if holder is None:
            try:
                collect(config, progress=False)
                return
            except OutputError:
                if lock_holder(path.parent, f".{path.name}.lock") is None:
                    raise  # not a collection under way: a real output problem
        if not said:
            print(f"rlmtl compare: {run.name}: waiting for {path} ({holder or 'another process'} is collecting it)", file=sys.stderr)
            said = True
        time.sleep(DATASET_POLL_S)


def _run_and_record(run: PlannedRun, out: Path, threads: int, resume: bool, launcher: str, job_id: str | None) -> int:
    from rlmtl.cli import main

    arguments = run.command(threads, resume)
    print(f"rlmtl compare: {run.name}: rlmtl {' '.join(arguments)}", file=sys.stderr, flush=True)
    started = time.time()
    code = 130
    try:
        code = main(arguments)
    finally:  # also when stopped (KeyboardInterrupt): the attempt's time counts
        record = {
            "start": round(started, 1),
            "end": round(time.time(), 1),
            "wall_s": round(time.time() - started, 1),
            "exit_code": code,
            "resumed": resume,
            "host": socket.gethostname(),
            "launcher": launcher,
            "threads": threads,
        }
        if job_id is not None:
            record["job_id"] = job_id
        append_attempt(out, run, record)
    return code


def _main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m rlmtl.compare.job REQUEST_JSON", file=sys.stderr)
        return 2
    from rlmtl.errors import RlmtlError

    _stop_on_sigterm()
    try:
        return execute(json.loads(argv[0]))
    except RlmtlError as error:  # e.g. a collection that failed: one line, its exit code
        print(f"rlmtl compare: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("rlmtl compare: run interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
