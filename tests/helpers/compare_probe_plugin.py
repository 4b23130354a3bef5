"""Test plugin (RLMTL_PLUGINS=compare_probe_plugin, RLMTL_TEST_PROBE=FILE): a run process of `rlmtl compare`
(`python -m rlmtl.compare.job`) appends {pid, OMP_NUM_THREADS, MKL_NUM_THREADS, start} to FILE when it loads
its plugins, and {pid, end, torch_threads} when it exits, so a test sees how many threads each run had and
which runs overlapped. Other processes (the comparison, pool workers) record nothing."""

from __future__ import annotations

import atexit
import json
import multiprocessing
import os
import sys
import time


def _append(record: dict) -> None:
    with open(os.environ["RLMTL_TEST_PROBE"], "a") as handle:
        handle.write(json.dumps(record) + "\n")


def _at_exit() -> None:
    threads = sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None
    _append({"pid": os.getpid(), "end": time.time(), "torch_threads": threads})


# a spawned pool worker inherits the parent's sys.argv: it is told apart by having a parent process
is_run_process = sys.argv and sys.argv[0].endswith(os.path.join("compare", "job.py")) and multiprocessing.parent_process() is None
if os.environ.get("RLMTL_TEST_PROBE") and is_run_process:
    _append({"pid": os.getpid(), "start": time.time(), **{v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}})
    atexit.register(_at_exit)
