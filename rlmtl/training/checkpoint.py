"""Checkpoints: atomic writes, a `last` pointer, safe loading (`weights_only=True`).

A run folder keeps `checkpoints/step_<N>.pt` (the newest `train.keep_checkpoints`),
`checkpoints/best.pt` (highest evaluation success) and `checkpoints/last`, a one-line text file
naming the newest complete checkpoint. The pointer is updated only after the checkpoint file has
been renamed into place, so a crash at any moment leaves a loadable `last`. `checkpoints/written.json`
lists the step checkpoints this run wrote, each with the size and modification time it had when
written: pruning deletes only those, so a checkpoint copied in from elsewhere, or a listed one
replaced since, is never deleted.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Any, TypedDict

import torch

from rlmtl.atomic import atomic_path, write_text_atomic
from rlmtl.errors import CheckpointError, OutputError

LAST_POINTER = "last"
WRITTEN_MANIFEST = "written.json"
STEP_NAME = re.compile(r"step_\d{8}\.pt")  # step_<N>.pt as the trainer names them
POINTER_TARGET = re.compile(r"[\w.-]+\.pt")


class DatasetRef(TypedDict, total=False):
    """The dataset a run trained on: its path, collection fingerprint and content hash."""

    path: str
    fingerprint: str
    sha256: str  # `data.dataset.content_digest`: a resumed run must read the same bytes
    renderer: str  # the camera renderer the dataset was made with, where the backend has several


class CheckpointMeta(TypedDict, total=False):
    """Everything needed to rebuild the agent and its environments from a checkpoint alone."""

    config: dict[str, Any]  # the run's config as plain data (`config_to_dict`)
    tasks: list[str]  # the K task names, in head order
    obs_shapes: dict[str, list[int]]  # observation key -> per-step shape
    action_dim: int  # A
    provenance: dict[str, Any]  # the training process's `rlmtl.provenance.provenance()`
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
    ema: dict[str, Any] | None  # the weights' moving average (train.ema_decay > 0): what evaluation loads


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


def _file_identity(path: Path) -> list[int]:
    """(size, modification time in ns): what a file rlmtl wrote still has unless someone replaced it."""
    status = path.stat()
    return [status.st_size, status.st_mtime_ns]


def _read_manifest(folder: Path) -> dict[str, list[int]]:
    """The step checkpoints the manifest lists (none when it is missing or unreadable: nothing is pruned then)."""
    try:
        listed = json.loads((folder / WRITTEN_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(listed, dict):
        return {}
    return {name: value for name, value in listed.items() if STEP_NAME.fullmatch(str(name)) and isinstance(value, list)}


def _write_manifest(folder: Path, listed: dict[str, list[int]]) -> None:
    path = folder / WRITTEN_MANIFEST
    try:
        write_text_atomic(path, json.dumps(listed, sort_keys=True, indent=1) + "\n")
    except OSError as error:
        raise OutputError(f"{path}: cannot record the checkpoints this run wrote ({error.strerror or error})") from None


def record_written(folder: Path, checkpoint: Path) -> None:
    """Add `checkpoint`, just written by this run, to the folder's manifest."""
    listed = _read_manifest(folder)
    listed[checkpoint.name] = _file_identity(checkpoint)
    _write_manifest(folder, listed)


def prune_checkpoints(folder: Path, keep: int) -> None:
    """Delete all but the newest `keep` of the step checkpoints this run wrote (listed in its
    manifest, unchanged since), never best.pt, the `last` target or a file rlmtl did not write;
    and temp files a crash left mid-write."""
    last = resolve_last(folder)
    for stale in [*folder.glob(".*.pt.tmp-*"), *folder.glob(f".{LAST_POINTER}.tmp-*"), *folder.glob(f".{WRITTEN_MANIFEST}.tmp-*")]:
        stale.unlink(missing_ok=True)  # left by a crash mid-write; the trainer (rank 0) is the only writer
    listed = _read_manifest(folder)
    ours = sorted(name for name, identity in listed.items() if (folder / name).is_file() and _file_identity(folder / name) == identity)
    for name in ours[: max(0, len(ours) - keep)]:
        if folder / name != last:
            (folder / name).unlink(missing_ok=True)
    remaining = {name: identity for name, identity in listed.items() if (folder / name).is_file()}
    if remaining != listed:
        _write_manifest(folder, remaining)


def commit_checkpoint(folder: Path, checkpoint: Path, keep: int) -> None:
    """After `checkpoint` is written into `folder`: list it as this run's, point `last` at it, and
    keep the newest `keep` of this run's step checkpoints."""
    record_written(folder, checkpoint)
    update_last_pointer(folder, checkpoint)
    prune_checkpoints(folder, keep)


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


def check_declared_sizes(path: Path) -> None:
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
    check_declared_sizes(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # corrupt zip, pickled globals refused by weights_only, ...
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(f"{path}: cannot load checkpoint ({message})") from None
    if not isinstance(payload, dict) or "model" not in payload or "meta" not in payload:
        raise CheckpointError(f"{path}: not an rlmtl checkpoint (missing 'model' or 'meta')")
    return payload
