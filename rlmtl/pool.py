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
ran last (its task), so it switches tasks as rarely as the order allows (a batched worker instead
drains the groups evenly and runs at most jobs_per_worker / (groups left) jobs of one group at
once: about one env per task while every task has jobs left, and more envs of the tasks still left
at the end, so its batches stay full: see `_Pending.take_for_batch`); a worker whose job raised
is asked to exit and runs the pool's `finalizer` (shutting its simulators down) before it is
replaced.

Batched jobs (`jobs_per_worker` > 1): a job's function may return a generator, which yields
requests and receives their answers (an episode yields observations and receives actions). A
worker then holds up to `jobs_per_worker` jobs at once and runs them in lockstep: one call of the
pool's `service` answers every running job's request (one policy call for all its envs), then each
job advances to its next request. Every job is still a job of its own: its own result, reruns and
attempts. The worker marks, in memory it shares with the parent, which job it is advancing; a
worker that crashes or hangs is charged to that job (attempt + 1), or to every job it held when it
died inside `service`, and the other jobs it held are run again from the start at the attempt they
had. A hang is `timeout_s` without progress: no job started, advanced or finished (for plain jobs,
one at a time, that is a job running longer than `timeout_s`). Workers load the plugins (the `rlmtl.plugins` entry points and the
`RLMTL_PLUGINS` modules), use one torch
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
from collections.abc import Generator
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


# Service: answers the requests of every running batched job at once, in order (see the module docstring)
Service = Callable[[list[Any]], list[Any]]

# a worker's shared progress record (`multiprocessing.RawArray("q", 2)`): the job it is running
# (0 while it runs `service` for all of them) and when it last made progress (time.monotonic_ns(),
# one clock for every process on the machine)
_CURRENT, _PROGRESS_NS = 0, 1


Running = dict[int, tuple[Generator[Any, Any, Any], Any]]  # a worker's batched jobs: generator, pending request


@dataclass(frozen=True)
class _WorkerSetup:
    """What a worker process is started with."""

    initializer: Callable[..., None] | None
    initargs: tuple
    parent: int
    finalizer: Callable[[], None] | None
    service: Service | None


def _worker_main(conn: Connection, setup: _WorkerSetup, progress: Any) -> None:
    """Worker loop: initializer, then lists of `(job_id, fn, args)` (jobs to start together) until
    None or the pipe closes; then the finalizer (e.g. shutting the worker's simulators down)."""
    try:
        _serve(conn, setup, progress)
    finally:
        finalizer = setup.finalizer
        if finalizer is not None:
            try:
                finalizer()
            except Exception as error:  # noqa: BLE001  (the worker is leaving; say what failed, in one line)
                print(f"rlmtl: worker {os.getpid()}: cleanup failed: {_describe(error)}", file=sys.stderr)
    # its simulators are shut down and nothing is left to write: leave without the interpreter's
    # teardown (torch's takes about half a second, which the parent would wait for)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _serve(conn: Connection, setup: _WorkerSetup, progress: Any) -> None:
    _die_with_parent(setup.parent)
    try:
        import torch

        from rlmtl.plugins import load_plugins

        torch.set_num_threads(1)
        load_plugins()
        if setup.initializer is not None:
            setup.initializer(*setup.initargs)
    except RlmtlError as error:
        conn.send(("fatal", str(error)))
        return
    except Exception as error:
        conn.send(("init_error", _describe(error) + "\n" + traceback.format_exc(limit=5)))
        return
    conn.send(("ready", None))
    running: Running = {}
    outbox: list[tuple] = []  # replies of the jobs that ended, sent together (see `_flush`)
    try:
        while True:
            while not running or conn.poll():  # wait for jobs when idle; else take only those already sent
                message = conn.recv()
                if message is None:
                    return
                for job_id, fn, args in message:
                    _mark(progress, job_id)
                    _start(outbox, running, job_id, fn, args)
                _flush(conn, outbox)
            _mark(progress, 0)
            jobs = list(running)
            try:
                if setup.service is None:
                    raise RuntimeError("a batched job ran in a pool without a service")
                answers = setup.service([running[job_id][1] for job_id in jobs])
            except RlmtlError as error:
                conn.send(("results", [(jobs[0], "fatal", str(error))]))
                return
            except Exception as error:  # charged to every job it served
                conn.send(("service_error", jobs, f"{_describe(error)} (in the batched service call)"))
                running.clear()
                continue
            for job_id, answer in zip(jobs, answers):
                _mark(progress, job_id)
                _advance(outbox, running, job_id, answer)
            _flush(conn, outbox)
    except (EOFError, OSError, ValueError):  # the parent is gone
        return


def _flush(conn: Connection, outbox: list[tuple]) -> None:
    """Send the replies of every job that ended in one step as ONE message, so the parent hands the
    freed places new jobs together (the worker then starts them together), however it is scheduled."""
    if outbox:
        conn.send(("results", list(outbox)))
        outbox.clear()


def _start(outbox: list[tuple], running: Running, job_id: int, fn: Callable[..., Any], args: tuple) -> None:
    """Start a job: a plain job runs to its end; a generator runs to its first request."""

    def first() -> Any:
        started = fn(*args)
        if not isinstance(started, Generator):
            raise StopIteration(started)
        running[job_id] = (started, None)
        return next(started)

    _settle(outbox, running, job_id, first)


def _advance(outbox: list[tuple], running: Running, job_id: int, answer: Any) -> None:
    """Answer a batched job's request; it runs to its next request or its end."""
    generator = running[job_id][0]
    _settle(outbox, running, job_id, lambda: generator.send(answer))


def _settle(outbox: list[tuple], running: Running, job_id: int, step: Callable[[], Any]) -> None:
    """Run one step of a job and file what came of it: its next request (kept in `running`) or
    its result, error or fatal error (queued in `outbox` for the parent)."""
    try:
        request = step()
    except StopIteration as done:
        reply: tuple = (job_id, "ok", done.value)
    except RlmtlError as error:
        reply = (job_id, "fatal", str(error))
    except Exception as error:
        reply = (job_id, "error", _describe(error))
    else:
        running[job_id] = (running[job_id][0], request)
        return
    running.pop(job_id, None)
    outbox.append(reply)


def _mark(progress: Any, job_id: int) -> None:
    """Record in shared memory which job runs from now on (0: the service), and that the worker got
    this far: a job starting, a batched job's step, the service call for all of them."""
    if progress is not None:
        progress[_CURRENT] = job_id
        progress[_PROGRESS_NS] = time.monotonic_ns()


def _progress_record(context: Any) -> Any:
    """A worker's shared progress record, or None where the system cannot make one (its backing file
    is refused: a full /dev/shm, a file-size limit). Without it a crash or hang is charged to every job
    the worker held, and a hang is timed from the last job sent or finished."""
    try:
        return context.RawArray("q", 2)
    except OSError:
        return None


def _exit_description(code: int | None) -> str:
    """'killed by signal 11 (SIGSEGV)' or 'exited with code 1'."""
    if code is not None and code < 0:
        try:
            return f"killed by signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class _Slot:
    """One worker process, its pipe, its shared progress record and the jobs it is running."""

    def __init__(self, context: Any, setup: _WorkerSetup) -> None:
        parent_end, child_end = context.Pipe(duplex=True)
        self.progress = _progress_record(context)
        self.process = context.Process(target=_worker_main, args=(child_end, setup, self.progress), daemon=True)
        self.process.start()
        child_end.close()
        self.conn: Connection = parent_end
        self.ready = False
        self.jobs: dict[int, Job] = {}  # by job id, in the order they were sent
        self.recent: list[Hashable] = []  # the groups it ran, the latest first (it keeps their envs)
        self.since = time.monotonic()  # its start, or when it was last sent a job or sent a result

    def next_job(self, pending: _Pending, jobs_per_worker: int) -> Job | None:
        """Take its next job: one at a time (`jobs_per_worker` 1), of the group it ran last (its env
        is there), else the first; batched, see `_Pending.take_for_batch`."""
        if jobs_per_worker > 1:
            running = collections.Counter(job.group for job in self.jobs.values())
            job = pending.take_for_batch(running, set(self.recent), jobs_per_worker)
            if job is None:
                return None
        else:
            job = pending.take(self.recent[:1])
        self.remember_group(job)
        return job

    def remember_group(self, job: Job) -> None:
        """A job of its started or ended: its group moves to the front of `recent` (when it ended,
        its env is the one free now)."""
        if job.group in self.recent:
            self.recent.remove(job.group)
        self.recent.insert(0, job.group)

    def last_progress(self) -> float:
        """The later of `since` and the last progress the worker recorded (time.monotonic() seconds)."""
        return self.since if self.progress is None else max(self.since, self.progress[_PROGRESS_NS] / 1e9)

    def to_blame(self, raised: set[int] | None) -> set[int]:
        """The ids of the held jobs a failure is charged to: the job(s) that raised, else the job the
        worker was running when it crashed or hung, else (it was serving them all) every held job."""
        if raised is not None:
            return raised
        current = self.progress[_CURRENT] if self.progress is not None else None
        return {current} if current in self.jobs else set(self.jobs)

    def kill(self) -> None:
        if self.process.is_alive():
            try:
                os.kill(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.join(timeout=10)
        self.conn.close()

    def ask_to_stop(self) -> None:
        """Tell the worker to leave (it runs its finalizer); does not wait."""
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass

    def stop(self) -> None:
        self.ask_to_stop()
        self.process.join(timeout=5)
        self.kill()


class _Pending:
    """Jobs waiting to run, by group, in the order given (a rerun goes first)."""

    def __init__(self, jobs: Iterable[Job]) -> None:
        self.groups: dict[Hashable, collections.deque[Job]] = {}
        for job in jobs:
            self.groups.setdefault(job.group, collections.deque()).append(job)

    def __len__(self) -> int:
        return sum(len(queue) for queue in self.groups.values())

    def __bool__(self) -> bool:
        return bool(self.groups)

    def push_front(self, job: Job) -> None:
        queue = self.groups.pop(job.group, collections.deque())
        queue.appendleft(job)
        self.groups = {job.group: queue, **self.groups}

    def take(self, prefer: Iterable[Hashable]) -> Job:
        """The next job of the first group in `prefer` that has one, else the first job."""
        return self._pop(next((group for group in prefer if group in self.groups), next(iter(self.groups))))

    def take_for_batch(self, running: collections.Counter[Hashable], kept: set[Hashable], places: int) -> Job | None:
        """For a worker with `places` batched places and `running` jobs per group: the next job of
        the group with the most jobs left among those with fewer than `places / groups left` jobs
        running (groups left: those with jobs pending or running there; the fewest running first;
        ties: one in `kept`), or None. Groups drain evenly, so the last jobs still belong to many
        groups, and the worker holds about one env per group; as groups run out, the cap rises and
        the groups left fill the freed places (episodes of unequal length would otherwise leave the
        worker's last batches a few envs of the longest tasks)."""
        per_group = self.group_cap(running, places)
        open_groups = [group for group in self.groups if running[group] < per_group]
        if not open_groups:
            return None
        return self._pop(max(open_groups, key=lambda group: (-running[group], len(self.groups[group]), group in kept)))

    def group_cap(self, running: collections.Counter[Hashable], places: int) -> int:
        """Jobs of one group a worker with `places` batched places may run at once: its places over
        the groups left (with jobs pending, or running there)."""
        return -(-places // max(1, len(self.groups.keys() | {group for group, count in running.items() if count})))

    def _pop(self, chosen: Hashable) -> Job:
        queue = self.groups[chosen]
        job = queue.popleft()
        if not queue:
            del self.groups[chosen]
        return job


class RobustPool:
    """`workers` spawn-started processes running `Job`s; see the module docstring.

    Use as a context manager; `run(jobs)` yields one `JobResult` per job, in completion order.
    `timeout_s` <= 0 means no time limit. `restarts` counts workers replaced after a crash or hang.
    `jobs_per_worker` > 1 lets a worker hold that many batched jobs at once, their requests
    answered together by `service` (a picklable module-level function).
    """

    def __init__(
        self,
        workers: int,
        initializer: Callable[..., None] | None = None,
        initargs: tuple = (),
        timeout_s: float = 0.0,
        max_retries: int = 2,
        finalizer: Callable[[], None] | None = None,
        jobs_per_worker: int = 1,
        service: Service | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if jobs_per_worker < 1:
            raise ValueError(f"jobs_per_worker must be >= 1, got {jobs_per_worker}")
        self.workers = workers
        self.jobs_per_worker = jobs_per_worker
        self.setup = _WorkerSetup(initializer, initargs, os.getpid(), finalizer, service)
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
        """Stop every worker (politely, all at once, then SIGKILL what is left)."""
        slots, self._slots = self._slots, []
        for slot in slots:
            slot.ask_to_stop()
        for slot in slots:
            slot.stop()

    def _start(self) -> _Slot:
        return _Slot(self._context, self.setup)

    def run(self, jobs: Iterable[Job]) -> Iterator[JobResult]:
        """Run every job; yields each result once, as soon as it is final."""
        pending = _Pending(jobs)
        remaining = len(pending)
        if remaining == 0:
            return
        while len(self._slots) < min(self.workers, -(-remaining // self.jobs_per_worker)):
            self._slots.append(self._start())
        startup_failures = 0
        next_id = 0
        while remaining:
            for slot in self._slots:
                handed: list[tuple[int, Callable[..., Any], tuple]] = []
                while slot.ready and len(slot.jobs) < self.jobs_per_worker and pending:
                    job = slot.next_job(pending, self.jobs_per_worker)
                    if job is None:
                        break
                    next_id += 1
                    if not slot.jobs:
                        slot.since = time.monotonic()
                    slot.jobs[next_id] = job
                    handed.append((next_id, job.fn, job.args))
                if handed:  # one message: the worker starts them together, however the parent is scheduled
                    slot.conn.send(handed)
            waits = [self._deadline(slot) for slot in self._slots]
            timeout = max(0.0, min(waits) - time.monotonic()) if waits else None
            wait([s.conn for s in self._slots] + [s.process.sentinel for s in self._slots], timeout=timeout)
            for index, slot in enumerate(list(self._slots)):
                failure, raised, finished = self._poll(slot)
                for result in finished:
                    remaining -= 1
                    yield result
                if failure is None:
                    continue
                # crashed, hung or raised: replace the worker; rerun or give up on the job(s) to blame,
                # rerun the others it held at the attempt they had
                blamed = slot.to_blame(raised)
                if raised is not None:
                    slot.stop()  # alive: it exits on its own, running its finalizer
                else:
                    slot.kill()
                self.restarts += 1
                held, slot.jobs = slot.jobs, {}
                if not held:
                    startup_failures += 1
                    if startup_failures > self.max_retries + self.workers:
                        raise RlmtlError(f"rollout workers keep failing to start ({failure})")
                for job_id, job in reversed(held.items()):
                    if job_id not in blamed:
                        pending.push_front(job)
                    elif job.attempt <= self.max_retries:
                        pending.push_front(Job(job.key, job.fn, job.args, job.attempt + 1, job.group))
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
        if not slot.jobs or self.timeout_s <= 0:
            return time.monotonic() + 3600.0
        return slot.last_progress() + self.timeout_s

    def _poll(self, slot: _Slot) -> tuple[str | None, set[int] | None, list[JobResult]]:
        """Read every message a worker sent; returns (why it must be replaced or None, the ids of
        the jobs that raised or None, results)."""
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
                    return f"worker initialisation failed: {message[1]}", None, finished
                elif kind == "service_error":
                    return f"raised {message[2]}", set(message[1]), finished
                else:  # "results": the replies of the jobs that ended in one step
                    failed: tuple | None = None
                    for job_id, status, value in message[1]:
                        if status == "fatal":
                            raise RlmtlError(value)
                        if status != "ok":
                            failed = failed or (job_id, value)
                            continue
                        job = slot.jobs.pop(job_id)
                        slot.remember_group(job)
                        slot.since = time.monotonic()
                        finished.append(JobResult(job.key, value, "", job.attempt))
                    if failed is not None:
                        return f"raised {failed[1]}", {failed[0]}, finished  # the worker is replaced, the job rerun
        except (EOFError, OSError):
            pass
        if not slot.process.is_alive():
            slot.process.join()
            return f"worker process {_exit_description(slot.process.exitcode)}", None, finished
        if slot.jobs and self.timeout_s > 0 and time.monotonic() - slot.last_progress() > self.timeout_s:
            return f"no progress for {self.timeout_s:g} s (worker hung; killed)", None, finished
        if not slot.ready and time.monotonic() - slot.since > STARTUP_TIMEOUT_S:
            return f"worker not ready after {STARTUP_TIMEOUT_S:g} s", None, finished
        return None, None, finished
