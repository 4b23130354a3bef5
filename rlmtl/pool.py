"""A process pool that survives its workers: crashed or hung workers are killed and replaced.

`concurrent.futures.ProcessPoolExecutor` breaks as a whole when one worker dies (a simulator
segfault, an `os._exit`, the OOM killer), and it cannot stop a job that never returns. This pool
gives every spawn-started worker its own pipe and watches each one:

- a worker that dies mid-job (its process sentinel fires), or whose job runs longer than
  `timeout_s`, is SIGKILLed and replaced by a fresh process, and the job is run again with the
  same arguments (so an episode keeps its scene seed), up to `max_retries` reruns;
- a job that raises an ordinary exception is treated the same way (the worker's simulator state
  is suspect, so the worker is replaced too);
- a job that still fails after its reruns comes back as a `JobResult` with `error` set, and the
  pool carries on with the other jobs;
- an `RlmtlError` raised by a job or by the worker initializer (a user error: a bad checkpoint,
  a missing expert) stops the pool and is raised in the parent.

Results are yielded as they finish. A free worker takes the next pending job of the `group` it
ran last (its task), so it switches tasks as rarely as the order allows; a worker whose job raised
is asked to exit and runs the pool's `finalizer` (shutting its simulators down) before it is
replaced. Workers import the `RLMTL_PLUGINS` modules, use one torch
thread each, and die with the parent: an idle worker sees its pipe close, and on Linux the kernel
kills a busy one (PR_SET_PDEATHSIG) when the parent dies, even by SIGKILL.

Collection (expert demos) and evaluation (policy episodes) both run their jobs here. Workers are
started with `spawn`, not fork: a parent that has created an OpenGL context deadlocks forked
MuJoCo renderers, and forking a process with live torch threads is unsafe. Even one worker is a
separate process, so a simulator that allows one instance per process (PyRep) never shares the
parent's.
"""

from __future__ import annotations

import collections
import ctypes
import multiprocessing
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Hashable, Iterable, Iterator

from rlmtl.errors import RlmtlError


def resolve_workers(requested: int) -> int:
    """0 means one worker per available core; more than the cores is capped there (with a message)."""
    try:
        cores = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        cores = max(1, os.cpu_count() or 1)
    if requested > cores:
        print(f"rlmtl: {requested} workers asked for, {cores} cores available: using {cores}", file=sys.stderr)
    return cores if requested <= 0 else min(requested, cores)


# a worker that has not finished its initializer after this long is replaced (counts as a crash)
STARTUP_TIMEOUT_S = 600.0


@dataclass
class Job:
    """One call `fn(*args)` identified by `key`; `attempt` counts runs (1 = first)."""

    key: Hashable
    fn: Callable[..., Any]
    args: tuple
    attempt: int = 1
    group: Hashable = None  # a free worker takes the next job of the group it ran last, if any (e.g. its task)


@dataclass
class JobResult:
    """The value of a job, or `error` (why its last run failed) after every rerun failed."""

    key: Hashable
    value: Any
    error: str
    attempts: int

    @property
    def ok(self) -> bool:
        return not self.error


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _die_with_parent(parent: int) -> None:
    """On Linux the kernel SIGKILLs this worker when the process that started it dies, however it
    dies (SIGKILL and SIGTERM included), so a worker busy in a long or hung job is never left
    behind holding a simulator (prctl PR_SET_PDEATHSIG, prctl(2))."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _worker_main(
    conn: Connection, initializer: Callable[..., None] | None, initargs: tuple, parent: int, finalizer: Callable[[], None] | None
) -> None:
    """Worker loop: initializer, then `(job_id, fn, args)` messages until None or the pipe closes;
    then the finalizer (e.g. shutting the worker's simulators down)."""
    try:
        _serve(conn, initializer, initargs, parent)
    finally:
        if finalizer is not None:
            try:
                finalizer()
            except Exception as error:  # noqa: BLE001  (the worker is leaving; say what failed, in one line)
                print(f"rlmtl: worker {os.getpid()}: cleanup failed: {_describe(error)}", file=sys.stderr)


def _serve(conn: Connection, initializer: Callable[..., None] | None, initargs: tuple, parent: int) -> None:
    _die_with_parent(parent)
    try:
        import torch

        from rlmtl.plugins import load_plugins

        torch.set_num_threads(1)
        load_plugins()
        if initializer is not None:
            initializer(*initargs)
    except RlmtlError as error:
        conn.send(("fatal", str(error)))
        return
    except Exception as error:
        conn.send(("init_error", _describe(error) + "\n" + traceback.format_exc(limit=5)))
        return
    conn.send(("ready", None))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if message is None:
            return
        job_id, fn, args = message
        try:
            reply = (job_id, "ok", fn(*args))
        except RlmtlError as error:
            reply = (job_id, "fatal", str(error))
        except Exception as error:
            reply = (job_id, "error", _describe(error))
        try:
            conn.send(reply)
        except (OSError, ValueError):  # parent gone
            return


def _exit_description(code: int | None) -> str:
    """'killed by signal 11 (SIGSEGV)' or 'exited with code 1'."""
    if code is not None and code < 0:
        try:
            return f"killed by signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class _Slot:
    """One worker process, its pipe, and the job it is running."""

    def __init__(
        self, context: Any, initializer: Callable[..., None] | None, initargs: tuple, finalizer: Callable[[], None] | None
    ) -> None:
        parent_end, child_end = context.Pipe(duplex=True)
        self.process = context.Process(target=_worker_main, args=(child_end, initializer, initargs, os.getpid(), finalizer), daemon=True)
        self.process.start()
        child_end.close()
        self.conn: Connection = parent_end
        self.ready = False
        self.job: Job | None = None
        self.group: Hashable = None  # the group of the last job it ran
        self.since = time.monotonic()

    def kill(self) -> None:
        if self.process.is_alive():
            try:
                os.kill(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.join(timeout=10)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.process.join(timeout=5)
        self.kill()


def _take(pending: "collections.deque[Job]", group: Hashable) -> Job:
    """The first pending job of `group` (a worker stays on its task), else the first one."""
    if group is not None:
        for index, job in enumerate(pending):
            if job.group == group:
                del pending[index]
                return job
    return pending.popleft()


class RobustPool:
    """`workers` spawn-started processes running `Job`s; see the module docstring.

    Use as a context manager; `run(jobs)` yields one `JobResult` per job, in completion order.
    `timeout_s` <= 0 means no time limit. `restarts` counts workers replaced after a crash or hang.
    """

    def __init__(
        self,
        workers: int,
        initializer: Callable[..., None] | None = None,
        initargs: tuple = (),
        timeout_s: float = 0.0,
        max_retries: int = 2,
        finalizer: Callable[[], None] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self.initializer = initializer
        self.initargs = initargs
        self.finalizer = finalizer
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.restarts = 0
        self._context = multiprocessing.get_context("spawn")
        self._slots: list[_Slot] = []

    def __enter__(self) -> "RobustPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every worker (politely, then SIGKILL)."""
        slots, self._slots = self._slots, []
        for slot in slots:
            slot.stop()

    def _start(self) -> _Slot:
        return _Slot(self._context, self.initializer, self.initargs, self.finalizer)

    def run(self, jobs: Iterable[Job]) -> Iterator[JobResult]:
        """Run every job; yields each result once, as soon as it is final."""
        pending: collections.deque[Job] = collections.deque(jobs)
        remaining = len(pending)
        if remaining == 0:
            return
        while len(self._slots) < min(self.workers, remaining):
            self._slots.append(self._start())
        startup_failures = 0
        next_id = 0
        running: dict[int, Job] = {}
        while remaining:
            for slot in self._slots:
                if slot.ready and slot.job is None and pending:
                    job = _take(pending, slot.group)
                    next_id += 1
                    running[next_id] = job
                    slot.job, slot.group, slot.since = job, job.group, time.monotonic()
                    slot.conn.send((next_id, job.fn, job.args))
            waits = [self._deadline(slot) for slot in self._slots]
            timeout = max(0.0, min(waits) - time.monotonic()) if waits else None
            wait([s.conn for s in self._slots] + [s.process.sentinel for s in self._slots], timeout=timeout)
            for index, slot in enumerate(list(self._slots)):
                failure, finished = self._poll(slot, running)
                for result in finished:
                    remaining -= 1
                    yield result
                if failure is None:
                    continue
                # crashed, hung or raised: replace the worker, rerun or give up on its job
                if failure.startswith("raised"):
                    slot.stop()  # alive and idle: it exits on its own, running its finalizer
                else:
                    slot.kill()
                self.restarts += 1
                job, slot.job = slot.job, None
                if job is None:
                    startup_failures += 1
                    if startup_failures > self.max_retries + self.workers:
                        raise RlmtlError(f"rollout workers keep failing to start ({failure})")
                elif job.attempt <= self.max_retries:
                    pending.appendleft(Job(job.key, job.fn, job.args, job.attempt + 1, job.group))
                else:
                    remaining -= 1
                    yield JobResult(job.key, None, failure, job.attempt)
                if remaining:
                    self._slots[index] = self._start()
                else:
                    self._slots.pop(index)

    def _deadline(self, slot: _Slot) -> float:
        if not slot.ready:
            return slot.since + STARTUP_TIMEOUT_S
        if slot.job is None or self.timeout_s <= 0:
            return time.monotonic() + 3600.0
        return slot.since + self.timeout_s

    def _poll(self, slot: _Slot, running: dict[int, Job]) -> tuple[str | None, list[JobResult]]:
        """Read every message a worker sent; returns (why it must be replaced or None, results)."""
        finished: list[JobResult] = []
        try:
            while slot.conn.poll():
                message = slot.conn.recv()
                kind = message[0]
                if kind == "ready":
                    slot.ready, slot.since = True, time.monotonic()
                elif kind == "fatal":
                    raise RlmtlError(message[1])
                elif kind == "init_error":
                    return f"worker initialisation failed: {message[1]}", finished
                else:
                    job_id, status, value = message
                    job = running.pop(job_id)
                    slot.job = None
                    if status == "ok":
                        finished.append(JobResult(job.key, value, "", job.attempt))
                    elif status == "fatal":
                        raise RlmtlError(value)
                    else:
                        slot.job = job  # replaced below, the job rerun
                        return f"raised {value}", finished
        except (EOFError, OSError):
            pass
        if not slot.process.is_alive():
            slot.process.join()
            return f"worker process {_exit_description(slot.process.exitcode)}", finished
        if slot.job is not None and self.timeout_s > 0 and time.monotonic() - slot.since > self.timeout_s:
            return f"no result after {self.timeout_s:g} s (worker hung; killed)", finished
        if not slot.ready and time.monotonic() - slot.since > STARTUP_TIMEOUT_S:
            return f"worker not ready after {STARTUP_TIMEOUT_S:g} s", finished
        return None, finished
