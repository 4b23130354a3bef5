"""Process pools for rollouts: spawn-started workers that each keep their environments.

`spawn` (not fork) because a parent that has created an OpenGL context deadlocks forked MuJoCo
renderers (measured in shared/reference/metaworld.md), and forking a process with live torch
threads is unsafe. With one worker everything runs in the calling process.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from typing import Any, Callable


def resolve_workers(requested: int) -> int:
    """0 means one worker per available core."""
    if requested > 0:
        return requested
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class InlineExecutor(Executor):
    """Runs jobs in the calling process, in submission order (used for one worker)."""

    def __init__(self, initializer: Callable[..., None] | None = None, initargs: tuple = ()) -> None:
        if initializer is not None:
            initializer(*initargs)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:  # delivered through the future like a pool would
            future.set_exception(error)
        return future


def _init_worker(initializer: Callable[..., None] | None, initargs: tuple) -> None:
    import torch

    from rlmtl.plugins import load_plugins

    torch.set_num_threads(1)
    load_plugins()  # spawn-started: the parent's plugin registrations are not inherited
    if initializer is not None:
        initializer(*initargs)


def make_executor(workers: int, initializer: Callable[..., None] | None = None, initargs: tuple = ()) -> Executor:
    """A pool of `workers` spawn-started processes (or an inline executor for 1)."""
    if workers <= 1:
        return InlineExecutor(initializer, initargs)
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(initializer, initargs),
    )
