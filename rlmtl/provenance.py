"""What produced a result: rlmtl's version and git commit, torch, Python and the simulators.

Recorded in a run's `config.yaml` (as comment lines, so the file still loads as a config), in
every checkpoint's `meta["provenance"]` (the training process), and in eval.json's `provenance`
(the evaluating process) and report.md. The git commit is that of the checkout rlmtl is imported
from (an editable install), with `dirty` when it has uncommitted changes; None when rlmtl is not
imported from a git checkout or git is missing.
"""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import Any

SIMULATOR_PACKAGES = ("mujoco", "metaworld", "rlbench", "pyrep")


def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def provenance() -> dict[str, Any]:
    """{rlmtl, git_commit, git_dirty, torch, python, packages: {name: version}} of this process."""
    import torch

    from rlmtl import __version__

    source = Path(__file__).resolve().parent
    commit = _git(source, "rev-parse", "HEAD")
    dirty = None if commit is None else bool(_git(source, "status", "--porcelain", "--untracked-files=no"))
    packages = {}
    for name in SIMULATOR_PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {
        "rlmtl": __version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "torch": str(torch.__version__),  # a TorchVersion would not load under weights_only=True
        "python": platform.python_version(),
        "packages": packages,
    }


def provenance_line(record: dict[str, Any] | None = None) -> str:
    """One line: `rlmtl 0.1.0 (git 1a2b3c4d, dirty), torch 2.13.0, Python 3.11.7, mujoco 3.3.0`."""
    record = record or provenance()
    commit = record.get("git_commit")
    git = f" (git {commit[:8]}{', dirty' if record.get('git_dirty') else ''})" if commit else ""
    packages = "".join(f", {name} {version}" for name, version in record.get("packages", {}).items())
    return f"rlmtl {record.get('rlmtl')}{git}, torch {record.get('torch')}, Python {record.get('python')}{packages}"
