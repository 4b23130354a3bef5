"""Batched pool jobs for tests/test_pool_batched.py (importable by spawn-started workers).

`episode(name, steps, fault, folder)` is a generator job: it yields (name, i) `steps` times,
receives the service's answer each time and returns the list of answers. `fault` is done once
(marked by a file in `folder`, so across processes) at step 2: "exit" (os._exit), "hang" (sleep
for an hour) or "raise". `slow_episode` sleeps between its steps. `service` answers every request
with i + 1 and appends the batch size to `folder/batches` (one line per call); `failing_service`
raises on its first call.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

FOLDER_ENV = "RLMTL_TEST_BATCH_DIR"


def _once(folder: Path, name: str) -> bool:
    """True the first time `name` is asked for in `folder`."""
    marker = folder / f"fired-{name}"
    if marker.exists():
        return False
    marker.write_text(str(os.getpid()))
    return True


def episode(name: str, steps: int, fault: str = ""):
    folder = Path(os.environ[FOLDER_ENV])
    answers = []
    for i in range(steps):
        if i == 2 and fault and _once(folder, name):
            if fault == "exit":
                os._exit(1)
            if fault == "hang":
                time.sleep(3600)
            if fault == "raise":
                raise RuntimeError(f"injected fault in {name}")
        answers.append((yield name, i))
    return answers


def slow_episode(name: str, steps: int, pause_s: float):
    answers = []
    for i in range(steps):
        time.sleep(pause_s)
        answers.append((yield name, i))
    return answers


def plain(name: str) -> str:
    return name.upper()


def service(requests: list[tuple[str, int]]) -> list[int]:
    with open(Path(os.environ[FOLDER_ENV]) / "batches", "a") as handle:
        handle.write(f"{len(requests)}\n")
    return [i + 1 for _, i in requests]


def failing_service(requests: list[tuple[str, int]]) -> list[int]:
    if _once(Path(os.environ[FOLDER_ENV]), "service"):
        raise RuntimeError("injected fault in the service")
    return service(requests)
