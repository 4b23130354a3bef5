"""What `rlmtl import` and `rlmtl export` share (rlmtl/data/robomimic_io.py, rlmtl/data/lerobot_io.py).

- Task selection: `--task TASK[=KEY]` names an rlmtl task and, when it differs, its name in the
  source (a robomimic filter key, a LeRobot task string); every TASK must be a task of the suite.
- Checks of foreign arrays: finite values, one step axis of the same length, known layouts.
- Writing an import: rlmtl's dataset writer (atomic, sealed), under the lock of the output file,
  never over a file rlmtl did not write; the dataset records where it came from (`imported_from`).
- Writing an export: a file through `atomic_path`, a folder through `atomic_folder` (written beside
  the target, renamed into place); an existing target is replaced only if rlmtl exported it (the
  `rlmtl_export` attribute of a file, `rlmtl_export.json` in a folder).

Export metadata (`export_metadata`) carries the source dataset's attributes, each demo's task,
scene seed and attempt, and the per-task statistics, so an rlmtl -> format -> rlmtl round trip gives
back the same dataset.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from rlmtl import __version__
from rlmtl.data.dataset import TaskRecord, check_replaceable, content_digest, write_dataset
from rlmtl.errors import ConfigError, DatasetError, OutputError
from rlmtl.folder_lock import FolderLock

EXPORT_FORMAT = "rlmtl.export"
MARKER_FILE = "rlmtl_export.json"  # in an exported folder: rlmtl wrote it (and may replace it)
MARKER_ATTR = "rlmtl_export"  # root attribute of an exported HDF5 file
DEFAULT_SUITE = ("metaworld", "mt10")  # the embedded default, for sources that do not say

# source attributes an import does not carry over (rewritten by the writer or by the import)
_WRITER_ATTRS = ("format", "format_version", "rlmtl_version", "tasks", "imported_from")


@dataclass(frozen=True)
class TaskChoice:
    """One `--task TASK[=KEY]`: the rlmtl task and its name in the source."""

    task: str
    key: str


def parse_task_choices(values: list[str] | None) -> list[TaskChoice]:
    """`--task` values as TaskChoices; ConfigError on an empty name or a task named twice."""
    choices: list[TaskChoice] = []
    for value in values or []:
        task, _, key = value.partition("=")
        if not task or ("=" in value and not key):
            raise ConfigError(f"--task {value!r}: expected TASK or TASK=NAME_IN_SOURCE")
        choices.append(TaskChoice(task, key or task))
    seen: set[str] = set()
    for choice in choices:
        if choice.task in seen:
            raise ConfigError(f"--task {choice.task!r} is given twice")
        seen.add(choice.task)
    return choices


def suite_tasks(backend: str, suite: str) -> list[str]:
    """The task names of a registered suite; ConfigError naming the known ones otherwise."""
    from rlmtl.envs import make_suite

    try:
        return list(make_suite(backend, suite).task_names)
    except KeyError as error:
        raise ConfigError(f"--backend {backend} --suite {suite}: {error.args[0] if error.args else error}") from None


def check_task(where: str, task: str, backend: str, suite: str, known: list[str]) -> None:
    """DatasetError naming `where` (the file and key the name came from) unless `task` is a task of the suite."""
    if task not in known:
        raise DatasetError(
            f"{where}: {task!r} is not a task of {backend} {suite} (tasks: {', '.join(known)}; map names with --task TASK=NAME)"
        )


def check_finite(where: str, values: np.ndarray) -> None:
    if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
        raise DatasetError(f"{where}: holds NaN or inf")


def check_length(where: str, values: Any, length: int, what: str) -> None:
    """DatasetError unless the first axis of `values` (anything with a shape) has `length` steps."""
    shape = tuple(values.shape)
    if not shape or shape[0] != length:
        raise DatasetError(f"{where}: shape {shape} does not match the {length} steps of {what}")


def is_image(shape: tuple[int, ...], dtype: Any) -> bool:
    """[T, H, W, 3] uint8: a camera (rlmtl stores cameras as `rgb_<camera>`)."""
    return len(shape) == 4 and shape[-1] == 3 and np.dtype(dtype) == np.uint8


MAX_IMAGE_SIDE = 4096


def check_image_shape(where: str, shape: tuple[int, ...]) -> None:
    if not 0 < shape[0] <= MAX_IMAGE_SIDE or not 0 < shape[1] <= MAX_IMAGE_SIDE:
        raise DatasetError(f"{where}: image shape {shape} is not H x W x 3 with sides up to {MAX_IMAGE_SIDE}")


def observation_spec(step_shapes: dict[str, tuple[int, ...]]) -> dict[str, dict[str, Any]]:
    """The `observation_spec` attribute of an imported dataset from each key's shape per step:
    [H, W, 3] is a uint8 camera, anything else a float32 vector."""
    return {
        key: {"shape": list(shape), "dtype": "uint8" if len(shape) == 3 else "float32", "low": None, "high": None}
        for key, shape in step_shapes.items()
    }


def export_metadata(dataset: Path, attrs: dict[str, Any], target_format: str) -> dict[str, Any]:
    """What an export records about its source (the marker of an rlmtl export)."""
    kept = {key: value for key, value in attrs.items() if key not in ("format", "format_version", "rlmtl_version")}
    return {
        "format": EXPORT_FORMAT,
        "target_format": target_format,
        "rlmtl_version": __version__,
        "source": str(dataset),
        "source_sha256": content_digest(dataset),
        "dataset_attrs": kept,
    }


def read_task_stats(dataset: Path, task: str) -> dict[str, dict[str, list[float]]]:
    """The per-task statistics of an rlmtl dataset (/stats/<task>/<key>/<stat>) as lists."""
    import h5py

    with h5py.File(dataset, "r") as handle:
        group = handle.get(f"stats/{task}")
        if group is None:
            return {}
        return {key: {name: np.asarray(group[key][name]).tolist() for name in group[key]} for key in group}


def imported_attrs(
    backend: str,
    suite: str,
    tasks: list[str],
    spec: dict[str, Any],
    action_dim: int,
    source_format: str,
    sources: list[Path],
    exported: dict[str, Any] | None,
) -> dict[str, Any]:
    """Root attributes of an imported dataset: those of the rlmtl dataset it was exported from
    (when it was), else what the data shows; always `imported_from`."""
    from rlmtl.envs import make_suite

    suite_object = make_suite(backend, suite)
    action_spec = suite_object.action_spec().to_dict()
    if list(action_spec["shape"]) != [action_dim]:
        action_spec = {"shape": [action_dim], "dtype": "float32", "low": None, "high": None}
    attrs: dict[str, Any] = {
        "seeds": {"split": "train", "source": f"{source_format} import", "scene_seed": "the demo's number in the source"},
        "max_episode_steps": suite_object.max_episode_steps,
        "fingerprint": "",
    }
    cameras = [key for key, item in spec.items() if len(item["shape"]) == 3]
    if cameras:
        attrs["image_size"] = int(spec[cameras[0]]["shape"][0])
    if exported is not None:
        attrs.update({key: value for key, value in exported["dataset_attrs"].items() if key not in _WRITER_ATTRS})
        spec = {key: exported["dataset_attrs"].get("observation_spec", {}).get(key, item) for key, item in spec.items()}
    attrs.update(
        backend=backend,
        suite=suite,
        tasks=tasks,
        observation_spec=spec,
        action_spec=attrs.get("action_spec", action_spec) if exported is not None else action_spec,
        imported_from={
            "format": source_format,
            "sources": [str(path.resolve()) for path in sources],
            "exported_by_rlmtl": exported is not None,
        },
    )
    return attrs


def write_import(out: Path, attrs: dict[str, Any], records: Callable[[], Iterator[TaskRecord]], command: str) -> Path:
    """Write the imported dataset to `out` (atomic; the lock of `out`; never over a file that is not
    an rlmtl dataset). An error while reading the source leaves no file behind."""
    check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with FolderLock(out.parent, command, f".{out.name}.lock"):
        write_dataset(out, attrs, records())
    return out


def check_export_target(out: Path, kind: str) -> None:
    """OutputError unless `out` is absent or an export rlmtl wrote (`kind`: "file" or "folder")."""
    if not out.exists() and not out.is_symlink():
        return
    exported = _exported_folder(out) if kind == "folder" else _exported_file(out)
    if not exported:
        what = "a folder" if out.is_dir() else "a file"
        raise OutputError(
            f"{out}: exists ({what}) and is not an {kind} `rlmtl export` wrote; not overwriting it: move it or choose another OUT"
        )


def _exported_folder(out: Path) -> bool:
    try:
        return out.is_dir() and not out.is_symlink() and json.loads((out / MARKER_FILE).read_text())["format"] == EXPORT_FORMAT
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _exported_file(out: Path) -> bool:
    import h5py

    if not out.is_file() or out.is_symlink():
        return False
    try:
        with h5py.File(out, "r") as handle:
            return json.loads(handle.attrs[MARKER_ATTR])["format"] == EXPORT_FORMAT
    except (OSError, ValueError, KeyError, TypeError):
        return False


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The export metadata of a folder rlmtl exported, else None."""
    try:
        data = json.loads((folder / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == EXPORT_FORMAT else None


@contextlib.contextmanager
def atomic_folder(target: Path) -> Iterator[Path]:
    """Yield an empty folder beside `target`; on success its files are fsynced and it takes the
    place of `target` (an old `target` is moved aside first, then removed). On an error the new
    folder is removed and `target` is untouched. A crash between the two renames leaves the old
    export in `.<name>.old-*` beside it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        for folder, _, files in os.walk(tmp):
            for name in files:
                with open(Path(folder) / name, "rb+") as handle:
                    os.fsync(handle.fileno())
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.rename(target, old / target.name)
        os.rename(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def export_lock(out: Path, command: str) -> FolderLock:
    out.parent.mkdir(parents=True, exist_ok=True)
    return FolderLock(out.parent, command, f".{out.name}.lock")


def warn(command: str, message: str) -> None:
    print(f"rlmtl {command}: warning: {message}", file=sys.stderr)


def output_error(out: Path, error: OSError) -> OutputError:
    return OutputError(f"{out}: cannot write the export ({error.strerror or error}); nothing was replaced")
