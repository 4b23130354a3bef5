"""rlmtl datasets to and from robomimic's HDF5 format (`rlmtl export/import --format robomimic`).

The layout, as robomimic reads it (robomimic 0.3.0 on PyPI, robomimic/utils/dataset.py; the same in
0.5.0, ARISE-Initiative/robomimic d309eae; docs/datasets/overview.md:59-99 there)::

    /data                    attrs: total (samples in the file), env_args (JSON: env_name, type, env_kwargs)
    /data/demo_<i>           attrs: num_samples  (SequenceDataset reads it for each demo: 0.3.0 dataset.py:188)
        actions [T, A], rewards [T], dones [T]
        obs/<key> [T, ...], next_obs/<key> [T, ...]
    /mask/<filter_key>       the demo names of a subset, as bytes (dataset.py:170; file_utils.create_hdf5_filter_key)

robomimic sorts the demos it reads by `int(name[5:])` (0.3.0 dataset.py:175, 0.5.0 dataset.py:204),
so /data holds `demo_<i>` groups only: rlmtl's task level (/data/<task>/demo_<i>) would make that
sort raise. Tasks become filter keys instead: one file holds every task, `mask/<task>` listing the
task's demos (train on one task with robomimic's `config.train.hdf5_filter_key = "<task>"`), or, with
`--per-task-files`, OUT is a folder with one `<task>.hdf5` per task (and its `mask/<task>`).

What rlmtl writes besides: `dones` is 1 where the demo ends (rlmtl's demos end at their first
success, so it equals rlmtl's `success`); `next_obs` is `obs` shifted by one step, its last row the
last observation again (rlmtl does not store the observation after the last action: robomimic's own
D4RL converter fills a missing final next_obs the same way, scripts/conversion/convert_d4rl.py:117);
no `states` (rlmtl records no simulator states; robomimic needs them only to replay in robosuite).
`env_args` names robomimic's gym type (robomimic/envs/env_base.py:15) and the rlmtl backend, suite
and tasks, but robomimic cannot roll these tasks out: evaluate with `rlmtl eval`. Observation keys
keep rlmtl's names (`state`, `proprio`, `rgb_<camera>` as [T, H, W, 3] uint8, robomimic's image
layout). rlmtl's own metadata, which robomimic ignores: the root attribute `rlmtl_export` (the
source dataset's attributes), each demo's `rlmtl_task`, `scene_seed` and `attempt`, and the per-task
statistics under /rlmtl/stats/<task>/<key>/{mean,std,min,max}.

Import reads any file of that layout: the demos of `mask/KEY` for each `--task TASK=KEY` (KEY
defaults to TASK), or every demo of a file given with one `--task` per file. From an rlmtl export
no `--task` is needed. Camera keys ([T, H, W, 3] uint8) become `rgb_<name>` (`agentview_image` ->
`rgb_agentview`), vector keys are kept as float32 ([T] as [T, 1]), other keys are skipped with a
warning; `success` is `dones != 0`; `next_obs` and `states` are not read. Every array is checked
before it is read (declared size against stored bytes, one length per demo, NaN/inf), and any
problem is one line naming the file and HDF5 path, with nothing written.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from rlmtl.data.dataset import (
    _CORRUPT,
    Episode,
    TaskRecord,
    _check_declared_size,
    check_room,
    iter_episodes,
    read_attrs,
)
from rlmtl.data.interchange import (
    DEFAULT_SUITE,
    MARKER_ATTR,
    MARKER_FILE,
    TaskChoice,
    atomic_folder,
    check_export_target,
    check_finite,
    check_image_shape,
    check_length,
    check_task,
    export_lock,
    export_metadata,
    imported_attrs,
    is_image,
    observation_spec,
    output_error,
    read_task_stats,
    suite_tasks,
    warn,
    write_import,
)
from rlmtl.errors import ConfigError, DatasetError
from rlmtl.progress import progress_bar

GYM_TYPE = 2  # robomimic/envs/env_base.py:15 EnvType.GYM_TYPE (0.3.0 and 0.5.0)


# ---------------------------------------------------------------- export


def export_robomimic(dataset: str | Path, out: str | Path, per_task_files: bool = False, progress: bool = True) -> Path:
    """Write the rlmtl dataset `dataset` as one robomimic file `out` (a filter key per task), or with
    `per_task_files` as a folder `out` of `<task>.hdf5` files. Returns `out`."""
    dataset, out = Path(dataset), Path(out)
    attrs = read_attrs(dataset)
    tasks = list(attrs["tasks"])
    check_export_target(out, "folder" if per_task_files else "file")
    meta = export_metadata(dataset, attrs, "robomimic")
    bar = progress_bar(sum(_demo_counts(dataset, tasks).values()), "export robomimic", "demo", progress)
    from rlmtl.atomic import atomic_path

    try:
        with export_lock(out, "rlmtl export"):
            if per_task_files:
                with atomic_folder(out) as folder:
                    for task in tasks:
                        _write_file(folder / f"{task}.hdf5", dataset, [task], meta, task, bar)
                    (folder / MARKER_FILE).write_text(json.dumps({**meta, "files": {task: f"{task}.hdf5" for task in tasks}}, indent=2))
            else:
                with atomic_path(out) as tmp:
                    _write_file(tmp, dataset, tasks, meta, str(attrs["suite"]), bar)
    except OSError as error:
        raise output_error(out, error) from None
    bar.close()
    print(f"rlmtl export: wrote {out} ({len(tasks)} tasks, robomimic)", file=sys.stderr)
    return out


def _demo_counts(dataset: Path, tasks: list[str]) -> dict[str, int]:
    import h5py

    with h5py.File(dataset, "r") as handle:
        return {task: int(handle[f"data/{task}"].attrs.get("num_demos", 0)) for task in tasks}


def _write_file(path: Path, dataset: Path, tasks: list[str], meta: dict[str, Any], env_name: str, bar: Any) -> None:
    import h5py

    with h5py.File(path, "w") as handle:
        handle.attrs[MARKER_ATTR] = json.dumps({**meta, "tasks": tasks})
        data = handle.create_group("data")
        total, index = 0, 0
        for task in tasks:
            names = []
            for episode in iter_episodes(dataset, task):
                handle.flush()
                check_room(path, 2 * sum(v.nbytes for v in episode.observations.values()) + episode.actions.nbytes)
                _write_demo(data.create_group(f"demo_{index}"), episode, task)
                names.append(f"demo_{index}")
                total += episode.length
                index += 1
                bar.update(1)
            handle.create_dataset(f"mask/{task}", data=np.array(names, dtype="S"))  # as file_utils.create_hdf5_filter_key
            for key, stats in read_task_stats(dataset, task).items():
                for name, values in stats.items():
                    handle.create_dataset(f"rlmtl/stats/{task}/{key}/{name}", data=np.asarray(values, dtype=np.float32))
        data.attrs["total"] = total
        kwargs = {"rlmtl_backend": meta["dataset_attrs"]["backend"], "rlmtl_suite": meta["dataset_attrs"]["suite"], "rlmtl_tasks": tasks}
        data.attrs["env_args"] = json.dumps({"env_name": env_name, "type": GYM_TYPE, "env_kwargs": kwargs})


def _write_demo(demo: Any, episode: Episode, task: str) -> None:
    demo.attrs.update(num_samples=episode.length, rlmtl_task=task, scene_seed=episode.scene_seed, attempt=episode.attempt)
    demo.create_dataset("actions", data=episode.actions.astype(np.float32))
    demo.create_dataset("rewards", data=episode.rewards.astype(np.float32))
    # 1 where playing the action ends the episode (docs/datasets/overview.md:77); int32 as convert_d4rl.py:92
    dones = np.zeros(episode.length, np.int32)
    dones[-1] = 1
    demo.create_dataset("dones", data=dones)
    for key, values in episode.observations.items():
        following = np.concatenate([values[1:], values[-1:]])  # the last step's next_obs repeats its obs
        for group, array in (("obs", values), ("next_obs", following)):
            options = (
                {"compression": "gzip", "compression_opts": 4, "chunks": (1, *array.shape[1:])}
                if array.ndim > 1 and array.dtype == np.uint8
                else {}
            )
            demo.create_dataset(f"{group}/{key}", data=array, **options)


# ---------------------------------------------------------------- import


@dataclass
class _Selection:
    """The demos of one rlmtl task: where they are and under which key the task was named."""

    task: str
    file: Path
    where: str  # the file and key that named the task (for errors)
    demos: list[str]


def import_robomimic(
    sources: list[str | Path],
    out: str | Path,
    choices: list[TaskChoice],
    backend: str | None = None,
    suite: str | None = None,
    progress: bool = True,
) -> Path:
    """Convert robomimic file(s) into an rlmtl dataset at `out`. See the module docstring."""
    import h5py

    files, out = [Path(s) for s in sources], Path(out)
    metas = [_export_meta(path) for path in files]
    exported = next((m for m in metas if m is not None), None)
    source_attrs = exported["dataset_attrs"] if exported else {}
    backend = backend or source_attrs.get("backend") or DEFAULT_SUITE[0]
    suite = suite or source_attrs.get("suite") or DEFAULT_SUITE[1]
    known = suite_tasks(backend, suite)
    layout: dict[str, tuple[tuple[int, ...], str]] = {}  # rlmtl key -> (step shape, source key)
    action_dim, skipped, current = None, set(), files[0]
    try:
        selections = _select(files, metas, choices)
        for selection in selections:
            check_task(selection.where, selection.task, backend, suite, known)
        for selection in selections:
            current = selection.file
            with h5py.File(selection.file, "r") as handle:
                for name in selection.demos:
                    action_dim = _check_demo(selection.file, handle, name, layout, action_dim, exported is not None, skipped)
    except _CORRUPT as error:
        raise _open_error(current, error) from None
    if action_dim is None:
        raise DatasetError(f"{files[0]}:/data: no demo to import")
    spec = observation_spec({key: shape for key, (shape, _) in layout.items()})
    tasks = [s.task for s in selections]
    attrs = imported_attrs(backend, suite, tasks, spec, action_dim, "robomimic", files, exported)
    bar = progress_bar(sum(len(s.demos) for s in selections), "import robomimic", "demo", progress)

    def records() -> Iterator[TaskRecord]:
        for selection in selections:
            try:
                with h5py.File(selection.file, "r") as handle:
                    episodes = [_read_demo(selection.file, handle, name, layout, bar) for name in selection.demos]
            except _CORRUPT as error:
                raise _open_error(selection.file, error) from None
            yield TaskRecord(selection.task, known.index(selection.task), episodes, len(episodes), len(episodes))

    write_import(out, attrs, records, "rlmtl import")
    bar.close()
    print(f"rlmtl import: wrote {out} ({len(tasks)} tasks from {len(files)} robomimic file(s))", file=sys.stderr)
    return out


def _open_error(path: Path, error: Exception) -> DatasetError:
    return DatasetError(f"{path}: not a readable HDF5 file ({type(error).__name__}: {error})")


def _export_meta(path: Path) -> dict[str, Any] | None:
    """The `rlmtl_export` attribute of a file rlmtl exported; DatasetError if it is no HDF5 file with /data."""
    import h5py

    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    try:
        with h5py.File(path, "r") as handle:
            if "data" not in handle:
                raise DatasetError(f"{path}: missing '/data' (not a robomimic file)")
            raw = handle.attrs.get(MARKER_ATTR)
    except _CORRUPT as error:
        raise _open_error(path, error) from None
    if raw is None:
        return None
    try:
        meta = json.loads(raw)
        meta["dataset_attrs"]["observation_spec"]
    except (ValueError, KeyError, TypeError):
        raise DatasetError(f"{path}:/ attribute {MARKER_ATTR!r} is not the JSON rlmtl export writes") from None
    return meta


def _demo_names(handle: Any, where: str, names: list[str]) -> list[str]:
    """`names` sorted as robomimic sorts them (by int(name[5:]), dataset.py:175), each checked to be a demo of /data."""
    for name in names:
        if not name.startswith("demo_") or not name[5:].isdigit():
            raise DatasetError(f"{where}: {name!r} is not a robomimic demo name (demo_<i>)")
        if name not in handle["data"]:
            raise DatasetError(f"{where}: names {name!r}, which is not in /data")
    return sorted(names, key=lambda name: int(name[5:]))


def _select(files: list[Path], metas: list[dict[str, Any] | None], choices: list[TaskChoice]) -> list[_Selection]:
    """Which demos of which file make each task (see the module docstring)."""
    import h5py

    if len(files) > 1 and len(choices) not in (0, len(files)):
        raise ConfigError(
            f"{len(files)} files but {len(choices)} --task: give one --task per file (in the same order), or none for rlmtl exports"
        )
    selections: list[_Selection] = []
    for index, path in enumerate(files):
        exported_tasks = [TaskChoice(t, t) for t in (metas[index] or {}).get("tasks", [])]
        with h5py.File(path, "r") as handle:
            masks = sorted(handle["mask"]) if isinstance(handle.get("mask"), h5py.Group) else []
            if len(files) > 1:  # one file per task
                wanted = [choices[index]] if choices else exported_tasks
                if len(wanted) != 1:
                    raise DatasetError(f"{path}: names no single rlmtl task; give one --task per file")
                whole_file = wanted[0].key not in masks
            else:
                wanted = choices or exported_tasks
                if not wanted:
                    listed = f"filter keys: {', '.join(masks)}" if masks else "no filter keys"
                    raise DatasetError(f"{path}: a robomimic file names no tasks ({listed}): give --task TASK[=FILTER_KEY]")
                whole_file = len(wanted) == 1 and not masks
            for choice in wanted:
                if whole_file:
                    label, names = f"{path} (--task {choice.task})", list(handle["data"])
                    demos = _demo_names(handle, f"{path}:/data", names)
                else:
                    if choice.key not in masks:
                        raise DatasetError(f"{path}:/mask/{choice.key}: no such filter key (filter keys: {', '.join(masks) or 'none'})")
                    label = f"{path}:/mask/{choice.key}"
                    listed = np.asarray(handle[f"mask/{choice.key}"]).reshape(-1)
                    demos = _demo_names(handle, label, [n.decode() if isinstance(n, bytes) else str(n) for n in listed])
                if not demos:
                    raise DatasetError(f"{label}: no demos")
                selections.append(_Selection(choice.task, path, label, demos))
    return selections


def _rlmtl_key(key: str, shape: tuple[int, ...], dtype: Any, verbatim: bool) -> str | None:
    """The rlmtl observation key of a robomimic key, or None for a layout rlmtl cannot hold."""
    if verbatim:
        return key
    if is_image(shape, dtype):
        return key if key.startswith("rgb_") else "rgb_" + key.removesuffix("_image")
    if len(shape) <= 2 and np.issubdtype(np.dtype(dtype), np.number):
        return key
    return None


def _check_demo(
    path: Path, handle: Any, name: str, layout: dict[str, Any], action_dim: int | None, verbatim: bool, skipped: set[str]
) -> int:
    """Check one demo from its metadata alone (nothing is read): required keys, one length, known
    shapes, the same observation keys as the demos before it. Returns the action dimension."""
    where = f"{path}:/data/{name}"
    demo = handle[f"data/{name}"]
    for key in ("actions", "rewards", "dones", "obs"):
        if key not in demo:
            raise DatasetError(f"{where}/{key}: missing")
    actions = demo["actions"]
    if actions.ndim != 2 or actions.shape[0] == 0 or not np.issubdtype(actions.dtype, np.number):
        raise DatasetError(f"{where}/actions: shape {actions.shape} ({actions.dtype}) is not [T, A] numbers with T > 0")
    if action_dim is not None and actions.shape[1] != action_dim:
        raise DatasetError(f"{where}/actions: {actions.shape[1]} action dims, earlier demos have {action_dim}")
    length = actions.shape[0]
    if "num_samples" in demo.attrs and int(demo.attrs["num_samples"]) != length:
        raise DatasetError(f"{where}: attribute num_samples is {int(demo.attrs['num_samples'])} but actions has {length} steps")
    for key in ("actions", "rewards", "dones"):
        _check_declared_size(where, demo[key])
    for key in ("rewards", "dones"):
        if not (np.issubdtype(demo[key].dtype, np.number) or demo[key].dtype == bool):
            raise DatasetError(f"{where}/{key}: holds {demo[key].dtype}, not numbers")
        check_length(f"{where}/{key}", demo[key], length, "actions")
        if demo[key].ndim > 2 or (demo[key].ndim == 2 and demo[key].shape[1] != 1):
            raise DatasetError(f"{where}/{key}: shape {demo[key].shape} is not [T] or [T, 1]")
    found: dict[str, tuple[tuple[int, ...], str]] = {}
    for key in demo["obs"]:
        array = demo[f"obs/{key}"]
        target = _rlmtl_key(key, array.shape, array.dtype, verbatim)
        if target is None:
            if key not in skipped:
                skipped.add(key)
                warn(
                    "import",
                    f"{where}/obs/{key}: shape {array.shape} ({array.dtype}) is neither a vector nor an H x W x 3 uint8 image; skipped",
                )
            continue
        _check_declared_size(f"{where}/obs", array)
        check_length(f"{where}/obs/{key}", array, length, "actions")
        if len(array.shape) == 4:
            check_image_shape(f"{where}/obs/{key}", array.shape[1:])
        step_shape = tuple(array.shape[1:]) if len(array.shape) != 1 else (1,)
        found[target] = (step_shape, key)
    if not found:
        raise DatasetError(f"{where}/obs: no observation rlmtl can use")
    if layout:
        for target, (shape, key) in layout.items():
            if target not in found:
                raise DatasetError(f"{where}/obs/{key}: missing (earlier demos have it)")
            if found[target][0] != shape:
                raise DatasetError(f"{where}/obs/{key}: step shape {found[target][0]} differs from earlier demos' {shape}")
        extra = sorted(set(found) - set(layout))
        if extra:
            raise DatasetError(f"{where}/obs/{found[extra[0]][1]}: not in earlier demos (every demo needs the same observation keys)")
    else:
        layout.update(found)
    return int(actions.shape[1])


def _read_demo(path: Path, handle: Any, name: str, layout: dict[str, tuple[tuple[int, ...], str]], bar: Any) -> Episode:
    where = f"{path}:/data/{name}"
    demo = handle[f"data/{name}"]
    actions = np.asarray(demo["actions"])
    check_finite(f"{where}/actions", actions)
    rewards = np.asarray(demo["rewards"]).reshape(-1)
    check_finite(f"{where}/rewards", rewards)
    dones = np.asarray(demo["dones"]).reshape(-1)
    check_finite(f"{where}/dones", dones)
    observations = {}
    for target, (shape, key) in layout.items():
        values = np.asarray(demo[f"obs/{key}"])
        check_finite(f"{where}/obs/{key}", values)
        observations[target] = values if len(shape) == 3 else values.reshape(len(values), *shape).astype(np.float32)
    bar.update(1)
    return Episode(
        observations=observations,
        actions=actions.astype(np.float32),
        rewards=rewards.astype(np.float32),
        success=dones != 0,
        scene_seed=int(demo.attrs.get("scene_seed", int(name[5:]))),
        attempt=int(demo.attrs.get("attempt", int(name[5:]))),
    )
