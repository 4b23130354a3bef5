"""A comparison that runs in seconds: the toy backend of fault_plugin (no simulator), a spec writer, the CLI
in a subprocess, and a probe plugin's records (compare_probe_plugin)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

HELPERS = Path(__file__).resolve().parent


def write_toy_config(folder: Path, steps: int = 6, checkpoint_every: int = 2) -> Path:
    """A config for fault_plugin's `faulty`/`toy` suite: 3 tasks, 2 demos each, a tiny agent, 4 episodes per task."""
    data = {
        "env": {"backend": "faulty", "suite": "toy"},
        "data": {"demos_per_task": 2, "max_attempts_per_demo": 20, "cache_dir": str(folder / "data"), "workers": 1},
        "agent": {"hidden_dim": 16, "num_layers": 1},
        "train": {"steps": steps, "batch_per_task": 4, "log_every": 2, "checkpoint_every": checkpoint_every, "warmup_steps": 0},
        "eval": {"episodes_per_task": 4, "workers": 1},
    }
    path = folder / "toy.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def write_spec(folder: Path, name: str = "spec.yaml", **keys: Any) -> Path:
    """A spec over the toy config (written beside it) with `keys` replacing the defaults."""
    config = folder / "toy.yaml"
    if not config.is_file():
        write_toy_config(folder)
    spec = {"out": str(folder / "out"), "settings": {"toy": {"config": str(config)}}, "methods": ["uniform", "famo"], "seeds": [0, 1], **keys}
    path = folder / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def compare_environment(probe: Path | None = None) -> dict[str, str]:
    """The environment of an `rlmtl compare` subprocess: the toy backend (and the probe) as plugins."""
    plugins = "fault_plugin" + (",compare_probe_plugin" if probe is not None else "")
    environment = dict(os.environ, RLMTL_PLUGINS=plugins, PYTHONPATH=os.pathsep.join([str(HELPERS), os.environ.get("PYTHONPATH", "")]))
    if probe is not None:
        environment["RLMTL_TEST_PROBE"] = str(probe)
    return environment


def start_compare(spec: Path, log: Path, *arguments: str, probe: Path | None = None, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`rlmtl compare SPEC ...` in its own session (so a test can signal its process group), output to `log`."""
    handle = open(log, "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "rlmtl", "compare", str(spec), *arguments],
        stdout=handle,
        stderr=subprocess.STDOUT,
        env=env or compare_environment(probe),
        cwd=spec.parent,
        start_new_session=True,
    )


def probe_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
