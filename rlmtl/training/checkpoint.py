"""Checkpoints: atomic writes, a `last` pointer, safe loading (`weights_only=True`).

A run folder keeps `checkpoints/step_<N>.pt` (the newest `train.keep_checkpoints`),
`checkpoints/best.pt` (highest evaluation success) and `checkpoints/last`, a one-line text file
naming the newest complete checkpoint. The pointer is updated only after the checkpoint file has
been renamed into place, so a crash at any moment leaves a loadable `last`.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any, TypedDict

import torch

from rlmtl.atomic import atomic_path, write_text_atomic
from rlmtl.errors import CheckpointError, OutputError

LAST_POINTER = "last"
STEP_NAME = re.compile(r"step_\d{8}\.pt")  # step_<N>.pt as the trainer names them
POINTER_TARGET = re.compile(r"[\w.-]+\.pt")


class DatasetRef(TypedDict, total=False):
    """The dataset a run trained on: its path, collection fingerprint and content hash."""

    path: str
    fingerprint: str
    sha256: str  # `data.dataset.content_digest`: a resumed run must read the same bytes


class CheckpointMeta(TypedDict, total=False):
    """Everything needed to rebuild the agent and its environments from a checkpoint alone."""

    config: dict[str, Any]  # the run's config as plain data (`config_to_dict`)
    tasks: list[str]  # the K task names, in head order
    obs_shapes: dict[str, list[int]]  # observation key -> per-step shape
    action_dim: int  # A
    dataset: DatasetRef


class RngState(TypedDict):
    torch: torch.Tensor  # the CPU generator's state
    cuda: list[torch.Tensor]  # per CUDA device (this rank's only under torchrun); [] on CPU


class CheckpointPayload(TypedDict, total=False):
    """What `checkpoints/*.pt` holds: only tensors and plain data (loads with `weights_only=True`)."""

    meta: CheckpointMeta
    step: int  # optimizer steps taken (the weighting engine's step count)
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    weighting: dict[str, torch.Tensor]
    sampler: dict[str, Any]
    val_sampler: dict[str, Any] | None  # only for methods that read a second batch
    rng: RngState
    nonfinite: dict[str, torch.Tensor]  # the current streak of skipped steps
    best_success: float | None  # the best periodic-evaluation success so far
    affinity_probe: dict[str, torch.Tensor] | None  # TAG's accumulated affinity, when probing


def save_checkpoint(path: str | Path, payload: CheckpointPayload) -> Path:
    """torch.save `payload` to `path` atomically; OutputError naming `path` when the write fails
    (disk full, quota): the previous file at `path` is left as it was."""
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
    except (OSError, RuntimeError) as error:  # torch.save reports a failed write as RuntimeError
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise OutputError(f"{path}: cannot write checkpoint ({message}); the previous checkpoints are unchanged") from None
    return path


def update_last_pointer(folder: Path, checkpoint: Path) -> None:
    try:
        write_text_atomic(folder / LAST_POINTER, checkpoint.name + "\n")
    except OSError as error:
        raise OutputError(
            f"{folder / LAST_POINTER}: cannot update the pointer ({error.strerror or error}); it still names the previous checkpoint"
        ) from None


def prune_checkpoints(folder: Path, keep: int) -> None:
    """Delete all but the newest `keep` step checkpoints (never best.pt or the `last` target), and
    temp files a crash left mid-write."""
    last = resolve_last(folder)
    for stale in [*folder.glob(".*.pt.tmp-*"), *folder.glob(f".{LAST_POINTER}.tmp-*")]:
        stale.unlink(missing_ok=True)  # left by a crash mid-write; the trainer (rank 0) is the only writer
    steps = sorted(p for p in folder.glob("step_*.pt") if STEP_NAME.fullmatch(p.name))  # only names the trainer writes
    for old in steps[: max(0, len(steps) - keep)]:
        if old != last:
            old.unlink(missing_ok=True)


def resolve_last(folder: Path) -> Path | None:
    """The checkpoint named by `folder/last`, or None when there is none."""
    pointer = folder / LAST_POINTER
    if not pointer.is_file():
        return None
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{pointer}: not a readable checkpoint pointer ({type(error).__name__})") from None
    if not POINTER_TARGET.fullmatch(name):  # a name in this folder, never a path out of it
        raise CheckpointError(f"{pointer}: names {name[:60]!r}, not a checkpoint file of this folder")
    target = folder / name
    return target if target.is_file() else None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file from a run folder (its `last`), a checkpoints folder, or a file."""
    path = Path(path)
    if path.is_file():
        return path
    for folder in (path / "checkpoints", path):
        if folder.is_dir():
            last = resolve_last(folder)
            if last is not None:
                return last
    raise CheckpointError(f"{path}: no checkpoint found (expected a .pt file or a run folder with checkpoints/last)")


def _check_declared_sizes(path: Path) -> None:
    """CheckpointError, before torch allocates anything, when the archive's entries declare more
    bytes than the file holds: `torch.save` writes stored (uncompressed) zip entries, and a few
    kilobytes that claim gigabytes would otherwise be allocated as declared."""
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # not a zip archive: torch.load says what it is
    size = path.stat().st_size
    declared = sum(entry.file_size for entry in entries)
    if declared > size or any(entry.compress_type != zipfile.ZIP_STORED for entry in entries):
        raise CheckpointError(f"{path}: its entries declare {declared} bytes in a {size}-byte file: not a checkpoint torch.save wrote")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> CheckpointPayload:
    """Load with `weights_only=True` (no arbitrary code); errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    _check_declared_sizes(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # corrupt zip, pickled globals refused by weights_only, ...
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(f"{path}: cannot load checkpoint ({message})") from None
    if not isinstance(payload, dict) or "model" not in payload or "meta" not in payload:
        raise CheckpointError(f"{path}: not an rlmtl checkpoint (missing 'model' or 'meta')")
    return payload
