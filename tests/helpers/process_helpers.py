"""Running rlmtl in subprocesses from tests."""

from __future__ import annotations

import os
import subprocess
import sys


def run_torchrun(nproc: int, *rlmtl_args: str, timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node=N -m rlmtl ARGS` (rank variables of this process removed)."""
    environment = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    environment.update(env or {})
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "rlmtl", *rlmtl_args]
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=timeout)
