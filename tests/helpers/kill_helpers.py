"""Test plugin (load with RLMTL_PLUGINS=kill_helpers): SIGKILL this process inside a checkpoint write.

$RLMTL_TEST_KILL = "<where>:<n>" arms a kill on the n-th step checkpoint (1-based) that this process
writes; without the variable importing this module changes nothing.

- `checkpoint`: torch.save fills the temporary file `.step_<N>.pt.tmp-*`, the file is cut to half its
  size (a torn write) and the process SIGKILLs itself before rlmtl.atomic renames it into place.
- `pointer`: the checkpoint file is renamed into place, then the process SIGKILLs itself once the
  `last` pointer's temporary file is written, just before that rename.

Both act through the real rlmtl.training.checkpoint / rlmtl.atomic code: only torch.save and os.replace are
wrapped. `python -m kill_helpers FOLDER COUNT` writes COUNT small checkpoints the way the Trainer
does (file, `last`, pruning), so the same kills can be tested without a simulator.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import torch

KILL_ENV = "RLMTL_TEST_KILL"
WHERE = ("checkpoint", "pointer")


def kill_setting(value: str | None = None) -> tuple[str, int] | None:
    """(where, n) from `value` (default: $RLMTL_TEST_KILL), or None when unset."""
    text = os.environ.get(KILL_ENV, "") if value is None else value
    if not text:
        return None
    where, _, count = text.partition(":")
    if where not in WHERE or not count.isdigit() or int(count) < 1:
        raise ValueError(f"{KILL_ENV}={text!r}: expected '<{'|'.join(WHERE)}>:<n>' with n >= 1")
    return where, int(count)


def is_step_temp(path: Any) -> bool:
    """True for the temporary file rlmtl.atomic writes a step checkpoint through."""
    if not isinstance(path, (str, os.PathLike)):
        return False
    name = Path(path).name
    return name.startswith(".step_") and ".pt.tmp-" in name


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _install(where: str, target: int) -> None:
    real_save, real_replace = torch.save, os.replace
    state = {"saved": 0, "pointer_armed": False}

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        real_save(obj, f, *args, **kwargs)
        if not is_step_temp(f):
            return
        state["saved"] += 1
        if state["saved"] != target:
            return
        if where == "checkpoint":
            size = os.path.getsize(f)
            os.truncate(f, size // 2)
            _die()
        state["pointer_armed"] = True

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if state["pointer_armed"] and Path(dst).name == "last":
            _die()
        real_replace(src, dst, *args, **kwargs)

    torch.save = save
    os.replace = replace


def write_checkpoints(folder: Path, count: int) -> None:
    """Save `count` checkpoints of a [256, 256] tensor as Trainer.save does: file, `last`, pruning."""
    from rlmtl.training.checkpoint import commit_checkpoint, save_checkpoint

    for step in range(1, count + 1):
        payload = {"meta": {}, "step": step, "model": {"w": torch.full((256, 256), float(step))}}
        path = save_checkpoint(folder / f"step_{step:08d}.pt", payload)
        commit_checkpoint(folder, path, keep=2)


_setting = kill_setting()
if _setting is not None:
    _install(*_setting)

if __name__ == "__main__":
    write_checkpoints(Path(sys.argv[1]), int(sys.argv[2]))
