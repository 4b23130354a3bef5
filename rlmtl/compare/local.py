"""The local launcher: up to `parallel` runs at once on this machine, each with its share of the cores.

A run gets `threads = max(1, cores // parallel)` (cores: this process's CPU affinity): `train.num_threads`,
`eval.workers` and `OMP_NUM_THREADS` / `MKL_NUM_THREADS` in its environment, so concurrent runs never
ask for more threads than there are cores (two 2-thread trainings on 2 cores spin against each other's
OpenMP threads and slow down by orders of magnitude). Each run is a `python -m rlmtl.compare.job`
process in a session of its own, its output appended to `<out>/logs/<name>.log`.

A run whose lock another process holds (another `rlmtl compare` of the same folder, or a run left
behind by a comparison that was SIGKILLed) is not started: it is checked again every few seconds and
picked up (found done, or resumed) once its lock is free. SIGTERM or SIGINT (Ctrl-C) stops the
comparison: each run's process group gets SIGTERM (rlmtl stops its pools and records the attempt),
SIGKILL after `STOP_GRACE_S`, and the comparison exits with 130; running it again continues.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from rlmtl.compare.job import EXIT_BUSY, limit_threads, make_request
from rlmtl.compare.runs import PlannedRun, run_lock_holder

STOP_GRACE_S = 30.0
BUSY_POLL_S = 5.0


def threads_per_run(parallel: int) -> int:
    """Cores per run when `parallel` runs share this machine (at least 1)."""
    from rlmtl.pool import resolve_workers

    return max(1, resolve_workers(0) // parallel)


@dataclass
class _Child:
    run: PlannedRun
    process: "subprocess.Popen[bytes]"
    log: IO[bytes]
    log_path: Path
    started: float


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


class LocalLauncher:
    """Runs the pending runs of a comparison on this machine (see the module docstring)."""

    def __init__(self, out: Path, parallel: int) -> None:
        self.out = out
        self.parallel = parallel
        self.threads = threads_per_run(parallel)
        self.failed: dict[str, str] = {}

    def _start(self, run: PlannedRun) -> _Child:
        log_path = self.out / "logs" / f"{run.name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab")
        log.write(f"\n===== rlmtl compare: {time.strftime('%Y-%m-%d %H:%M:%S')}, {self.threads} thread(s)\n".encode())
        log.flush()
        environment = dict(os.environ, PYTHONUNBUFFERED="1")
        limit_threads(self.threads, environment)
        request = make_request(run, self.out, self.threads, "local")
        process = subprocess.Popen(
            [sys.executable, "-m", "rlmtl.compare.job", json.dumps(request)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,  # its own process group: stopped as a whole, and not by a Ctrl-C meant for the comparison
        )
        return _Child(run, process, log, log_path, time.monotonic())

    def run(self, pending: list[PlannedRun]) -> dict[str, str]:
        """Run `pending` to the end; returns {name: why} of the runs that failed (exit code and log)."""
        queue, running = list(pending), {}
        waiting_said: set[str] = set()
        previous = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
        total, finished = len(pending), 0
        try:
            while queue or running:
                for run in list(queue):
                    if len(running) >= self.parallel:
                        break
                    holder = run_lock_holder(self.out, run)
                    if holder is not None:
                        if run.name not in waiting_said:
                            print(f"rlmtl compare: {run.name}: {holder}; waiting for it", file=sys.stderr)
                            waiting_said.add(run.name)
                        continue
                    queue.remove(run)
                    running[run.name] = self._start(run)
                    print(f"rlmtl compare: started {run.name} ({self.threads} thread(s)), log {running[run.name].log_path}", file=sys.stderr)
                for name, child in list(running.items()):
                    code = child.process.poll()
                    if code is None:
                        continue
                    del running[name]
                    child.log.close()
                    seconds = time.monotonic() - child.started
                    if code == EXIT_BUSY:  # taken by another process between the check and the start
                        queue.append(child.run)
                        continue
                    finished += 1
                    if code == 0:
                        print(f"rlmtl compare: finished {name} in {seconds:.0f} s ({finished}/{total})", file=sys.stderr)
                    else:
                        self.failed[name] = f"exit code {code}, log {child.log_path}"
                        print(f"rlmtl compare: {name} failed ({self.failed[name]})", file=sys.stderr)
                only_waiting = queue and not running
                time.sleep(BUSY_POLL_S if only_waiting else 0.2)
        except KeyboardInterrupt:
            self._stop(list(running.values()))
            raise
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.failed

    def _stop(self, children: list[_Child]) -> None:
        """SIGTERM to every run's process group, SIGKILL to those still there after STOP_GRACE_S."""
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal must not cut the clean-up short
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for child in children:
            _signal_group(child.process, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for child in children:
            try:
                child.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(child.process, signal.SIGKILL)
                child.process.wait()
            child.log.close()
            print(f"rlmtl compare: stopped {child.run.name}", file=sys.stderr)


def _signal_group(process: "subprocess.Popen[bytes]", sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass
