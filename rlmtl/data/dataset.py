"""rlmtl's multi-task demonstration format (HDF5), its writer and its validating reader.

Layout (version 1)::

    /                         attrs: format="rlmtl.dataset", format_version=1, backend, suite,
                                     tasks (JSON list), observation_spec, action_spec (JSON),
                                     seeds (JSON), fingerprint, rlmtl_version
    /data/<task>/             attrs: task_index, num_demos, num_steps, requested_demos, attempts[, successes]
    /data/<task>/demo_<i>/    attrs: scene_seed, attempt, length
        obs/<key>             [T, ...]  float32 vectors (state, proprio) or uint8 [T, H, W, 3] images
        actions               [T, A] float32
        rewards               [T] float32
        success               [T] bool (the task is solved after this step)
    /stats/<task>/<key>/      mean, std, min, max  (per vector observation key and "actions")

One demo is one episode of the expert, stopped at its first success (or that many steps after it:
root attr `steps_after_success`, when collected with `data.steps_after_success`); only successful
episodes are stored.

The file starts with a 512-byte HDF5 user block (ignored by HDF5) holding
`rlmtl-dataset-sha256:<hex>`, the sha256 of the rest of the file. The reader checks it before
HDF5 parses anything, so a truncated or corrupted file is a DatasetError, never a crash inside
the HDF5 library (which random corruption can cause). Files without the seal are read as is.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from rlmtl import __version__
from rlmtl.atomic import atomic_path
from rlmtl.errors import DatasetError, OutputError

# what h5py raises on a damaged file besides OSError (KeyError: "actual len exceeds EOA", ...)
_CORRUPT = (OSError, KeyError, ValueError, RuntimeError, TypeError, IndexError)

_USERBLOCK = 512
_SEAL = b"rlmtl-dataset-sha256:"

FORMAT = "rlmtl.dataset"
FORMAT_VERSION = 1


@dataclass
class Episode:
    """One recorded episode: per-step arrays of equal length T."""

    observations: dict[str, np.ndarray]
    actions: np.ndarray
    rewards: np.ndarray
    success: np.ndarray
    scene_seed: int
    attempt: int

    @property
    def length(self) -> int:
        return int(self.actions.shape[0])

    @property
    def solved(self) -> bool:
        return bool(self.success.any())


@dataclass
class TaskRecord:
    """Everything written for one task."""

    task: str
    task_index: int
    episodes: list[Episode]
    requested_demos: int
    attempts: int
    successes: int | None = None  # successful expert attempts, kept or not (collection); None: not known


def summary_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """mean/std/min/max over the first axis, as float32."""
    values = values.astype(np.float64)
    return {
        "mean": values.mean(0).astype(np.float32),
        "std": values.std(0).astype(np.float32),
        "min": values.min(0).astype(np.float32),
        "max": values.max(0).astype(np.float32),
    }


def renderer_warning(path: str | Path, recorded: str | None, used: str | None, doing: str) -> str | None:
    """A one-line warning when the dataset at `path` was rendered with `recorded` but `doing`
    (training or evaluating) uses `used`; None when they agree or either is unknown."""
    if not recorded or not used or recorded == used:
        return None
    return f"warning: {path} was rendered with {recorded!r} but {doing} uses {used!r}: the policy sees images of another renderer"


def write_dataset(path: str | Path, attrs: dict[str, Any], records: Iterable[TaskRecord]) -> None:
    """Write the dataset atomically: a crash leaves the previous file (or none), never half a file.
    A failed write (disk full) is an OutputError naming `path`; the previous file is unchanged.

    The file is written to a temporary file beside `path` one task at a time, so a dataset larger
    than memory can be written (records may be a generator holding one task at a time). libhdf5
    crashes (SIGSEGV) when a write fails with EFBIG/ENOSPC (measured; tests/test_reliability_inputs.py),
    so before each task the room left (free disk space, and the process's file-size limit) is
    checked against the task's uncompressed bytes, and a task that may not fit is an OutputError
    before HDF5 writes any of it."""
    import h5py

    try:
        with atomic_path(path) as tmp:
            with h5py.File(tmp, "w", userblock_size=_USERBLOCK) as handle:
                handle.attrs["format"] = FORMAT
                handle.attrs["format_version"] = FORMAT_VERSION
                handle.attrs["rlmtl_version"] = __version__
                for key, value in attrs.items():
                    handle.attrs[key] = value if isinstance(value, (str, int, float)) else json.dumps(value)
                data, stats = handle.create_group("data"), handle.create_group("stats")
                for record in records:
                    handle.flush()
                    check_room(tmp, _record_bytes(record))
                    _write_task(data, stats, record)
            seal(tmp)
    except OSError as error:
        raise OutputError(f"{path}: cannot write the dataset ({error}); the previous file is unchanged") from None


WRITE_MARGIN_BYTES = 16 << 20  # HDF5 metadata written with a task and at close, with room to spare


def _record_bytes(record: TaskRecord) -> int:
    """Uncompressed bytes of a task's arrays (gzip never makes rlmtl's arrays much larger)."""
    total = 0
    for episode in record.episodes:
        total += sum(v.nbytes for v in episode.observations.values())
        total += episode.actions.nbytes + episode.rewards.nbytes + episode.success.nbytes
    return total


def check_room(tmp: Path, needed: int) -> None:
    """OSError (ENOSPC) unless `needed` more bytes (plus a margin) fit on the disk of `tmp` and
    under the process's file-size limit (RLIMIT_FSIZE)."""
    import errno
    import resource
    import shutil

    room = shutil.disk_usage(tmp.parent).free
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY:
        room = min(room, limit - tmp.stat().st_size)
    wanted = int(needed * 1.01) + WRITE_MARGIN_BYTES
    if wanted > room:
        raise OSError(
            errno.ENOSPC, f"{wanted} bytes needed for the next task, {max(room, 0)} left on the disk or under the file-size limit"
        )


def _body_digest(handle: Any, start: int = _USERBLOCK) -> str:
    """sha256 of the file from `start` on, read in 1 MiB blocks."""
    handle.seek(start)
    digest = hashlib.sha256()
    for block in iter(lambda: handle.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


def seal(path: Path) -> None:
    """Write the checksum of everything after the user block into the user block."""
    with open(path, "r+b") as handle:
        header = _SEAL + _body_digest(handle).encode()
        handle.seek(0)
        handle.write(header.ljust(_USERBLOCK, b"\0"))


def check_replaceable(path: Path) -> None:
    """OutputError unless `path` is absent or an rlmtl dataset (so a write may replace it): rlmtl
    never overwrites a file it did not write."""
    if not path.exists():
        return
    if path.is_dir():
        raise OutputError(f"{path}: is a folder, not a dataset file; set data.path to a file")
    try:
        read_attrs(path)
    except DatasetError as error:
        reason = str(error).removeprefix(f"{path}: ")
        raise OutputError(
            f"{path}: exists and is not a readable rlmtl dataset ({reason}); not overwriting it: move it, or set data.path"
        ) from None


def content_digest(path: str | Path) -> str:
    """sha256 of the dataset's content: the sealed digest (read from the user block, no pass over
    the file) or, for a file without a seal, computed."""
    with open(path, "rb") as handle:
        head = handle.read(_USERBLOCK)
        if head.startswith(_SEAL):
            return head[len(_SEAL) : len(_SEAL) + 64].decode("ascii", "replace")
        return _body_digest(handle, start=0)


_VERIFIED: set[tuple[int, int, int, int]] = set()  # (device, inode, size, mtime_ns) of large files whose seal matched
_REMEMBER_FROM_BYTES = 1 << 30


def verify_seal(path: Path) -> None:
    """DatasetError naming `path` when its checksum does not match (truncated or corrupt). A file
    of 1 GiB or more verified once in this process is not hashed again while its inode, size and
    mtime are unchanged (a 14 GB dataset takes tens of seconds to hash, and a run opens it several
    times; rewriting a file that large cannot keep its mtime, which small files rewritten within
    one clock tick can)."""
    status = os.stat(path)
    identity = (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)
    if identity in _VERIFIED:
        return
    with open(path, "rb") as handle:
        head = handle.read(_USERBLOCK)
        if not head.startswith(_SEAL):
            return  # written without a seal: nothing to check
        expected = head[len(_SEAL) : len(_SEAL) + 64].decode("ascii", "replace")
        if _body_digest(handle) != expected:
            raise DatasetError(f"{path}: checksum mismatch: the file is truncated or corrupt (collect it again)")
    if status.st_size >= _REMEMBER_FROM_BYTES:
        _VERIFIED.add(identity)


def _write_task(data: Any, stats: Any, record: TaskRecord) -> None:
    group = data.create_group(record.task)
    group.attrs.update(
        task_index=record.task_index,
        num_demos=len(record.episodes),
        num_steps=sum(e.length for e in record.episodes),
        requested_demos=record.requested_demos,
        attempts=record.attempts,
    )
    if record.successes is not None:
        group.attrs["successes"] = record.successes
    for i, episode in enumerate(record.episodes):
        demo = group.create_group(f"demo_{i}")
        demo.attrs.update(scene_seed=episode.scene_seed, attempt=episode.attempt, length=episode.length)
        obs = demo.create_group("obs")
        for key, values in episode.observations.items():
            # images: gzip, one chunk per frame, so a streamed sample decompresses only its own frame
            frame_chunks = {"chunks": (1, *values.shape[1:])} if values.ndim > 1 and values.shape[0] > 0 else {}
            compression = {"compression": "gzip", "compression_opts": 4, **frame_chunks} if values.dtype == np.uint8 else {}
            obs.create_dataset(key, data=values, **compression)
        demo.create_dataset("actions", data=episode.actions.astype(np.float32))
        demo.create_dataset("rewards", data=episode.rewards.astype(np.float32))
        demo.create_dataset("success", data=episode.success.astype(bool))
    if not record.episodes:
        return
    task_stats = stats.create_group(record.task)
    vector_keys = [k for k, v in record.episodes[0].observations.items() if v.dtype != np.uint8]
    for key in vector_keys:
        values = np.concatenate([e.observations[key] for e in record.episodes])
        for name, value in summary_stats(values).items():
            task_stats.create_dataset(f"{key}/{name}", data=value)
    actions = np.concatenate([e.actions for e in record.episodes])
    for name, value in summary_stats(actions).items():
        task_stats.create_dataset(f"actions/{name}", data=value)


@dataclass
class TaskData:
    """One task's demos flattened to step arrays, ready for sampling. Streamed keys (read from
    the file per batch) are absent from `observations`; `demos` and `lengths` locate their rows."""

    observations: dict[str, np.ndarray]  # key -> [N, ...]
    actions: np.ndarray  # [N, A]
    stats: dict[str, dict[str, np.ndarray]]  # key -> {mean, std, min, max}
    num_demos: int
    demos: list[str] = field(default_factory=list)  # HDF5 group of each demo, in row order
    lengths: list[int] = field(default_factory=list)  # steps of each demo


@dataclass
class MultiTaskData:
    """All tasks of a dataset, in the order the run asked for them."""

    path: Path
    attrs: dict[str, Any]
    tasks: list[str]
    per_task: list[TaskData]

    @property
    def num_steps(self) -> list[int]:
        return [int(t.actions.shape[0]) for t in self.per_task]


def read_attrs(path: str | Path) -> dict[str, Any]:
    """The root attributes (JSON values decoded); raises DatasetError naming the file."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: dataset not found (run `rlmtl collect CONFIG` first)")
    try:
        verify_seal(path)
        with h5py.File(path, "r") as handle:
            return _decode_attrs(path, handle)
    except _CORRUPT as error:
        raise DatasetError(f"{path}: not a readable HDF5 file ({type(error).__name__}: {error})") from None


def _decode_attrs(path: Path, handle: Any) -> dict[str, Any]:
    attrs = dict(handle.attrs)
    if attrs.get("format") != FORMAT:
        raise DatasetError(f"{path}: not an rlmtl dataset (attribute 'format' is {attrs.get('format')!r})")
    if int(attrs.get("format_version", -1)) != FORMAT_VERSION:
        raise DatasetError(f"{path}: format_version {attrs.get('format_version')} is not supported (expected {FORMAT_VERSION})")
    decoded: dict[str, Any] = {}
    for key, value in attrs.items():
        if isinstance(value, bytes):
            value = value.decode()
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, str) and value[:1] in ("[", "{"):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise DatasetError(f"{path}: attribute {key!r} is not valid JSON") from None
        decoded[key] = value
    for key in ("backend", "suite", "tasks", "observation_spec", "action_spec"):
        if key not in decoded:
            raise DatasetError(f"{path}: missing root attribute {key!r}")
    return decoded


def load_dataset(
    path: str | Path,
    tasks: list[str],
    obs_keys: list[str],
    action_dim: int | None = None,
    stream_keys: Iterable[str] = (),
    demo_limits: Mapping[str, int] | None = None,
) -> MultiTaskData:
    """Read the demos of `tasks` with observation keys `obs_keys` into memory, except the
    `stream_keys`, whose shapes are checked but whose values stay in the file (see
    `rlmtl.data.streaming`). `demo_limits` {task: N}: only the first N demos of those tasks, with
    their statistics computed from those demos (`data.train_demos`, imbalanced data); a task with
    fewer demos is a DatasetError.

    Every mismatch (missing task, key, statistic, wrong shapes, empty task) raises DatasetError
    naming the file and the HDF5 path.
    """
    import h5py

    path = Path(path)
    attrs = read_attrs(path)
    streamed = set(stream_keys)
    try:
        with h5py.File(path, "r") as handle:
            limits = demo_limits or {}
            per_task = [_read_task(path, handle, task, obs_keys, attrs, action_dim, streamed, limits.get(task)) for task in tasks]
    except _CORRUPT as error:
        raise DatasetError(f"{path}: corrupt HDF5 data ({type(error).__name__}: {error})") from None
    return MultiTaskData(path=path, attrs=attrs, tasks=list(tasks), per_task=per_task)


# a stored array may declare more bytes than it occupies only through compression; gzip of the
# images rlmtl writes stays far below this ratio, a crafted file (a huge shape, nothing stored) does not
MAX_EXPANSION = 1024
SMALL_ARRAY_BYTES = 1 << 20


def _check_declared_size(where: str, array: Any) -> None:
    """DatasetError, before anything is allocated, for an array whose declared size is not backed by
    the file (a few kilobytes can declare gigabytes: an unwritten chunked dataset reads as zeros)."""
    declared = int(np.prod(array.shape, dtype=np.int64)) * array.dtype.itemsize
    stored = array.id.get_storage_size()
    if declared > SMALL_ARRAY_BYTES and declared > MAX_EXPANSION * stored:
        raise DatasetError(
            f"{where}/{array.name.rsplit('/', 1)[-1]}: declares {declared} bytes but stores {stored}: not a dataset rlmtl wrote"
        )


def iter_episodes(path: str | Path, task: str) -> Iterator[Episode]:
    """Every demo of `task` in the dataset at `path`, in order, one at a time, with all its
    observation keys, rewards and success (what `rlmtl export` writes out). The seal and format
    are checked first; a demo whose arrays disagree in length, declare more bytes than they store
    or hold NaN/inf is a DatasetError naming the file and HDF5 path."""
    import h5py

    path = Path(path)
    attrs = read_attrs(path)
    try:
        with h5py.File(path, "r") as handle:
            if f"data/{task}" not in handle:
                raise DatasetError(f"{path}: no task {task!r} (dataset tasks: {', '.join(attrs['tasks'])})")
            group = handle[f"data/{task}"]
            for name in sorted((n for n in group if n.startswith("demo_")), key=lambda n: int(n.split("_")[1])):
                yield _read_episode(f"{path}:/data/{task}/{name}", group[name])
    except _CORRUPT as error:
        raise DatasetError(f"{path}: corrupt HDF5 data ({type(error).__name__}: {error})") from None


def _read_episode(where: str, demo: Any) -> Episode:
    for key in ("actions", "rewards", "success", "obs"):
        if key not in demo:
            raise DatasetError(f"{where}: missing {key!r}")
    arrays: dict[str, np.ndarray] = {}
    for key in ["actions", "rewards", "success", *(f"obs/{k}" for k in demo["obs"])]:
        _check_declared_size(where, demo[key])
        arrays[key] = np.asarray(demo[key])
    length = arrays["actions"].shape[0]
    for key, values in arrays.items():
        if values.ndim == 0 or values.shape[0] != length:
            raise DatasetError(f"{where}/{key}: shape {values.shape} does not match the {length} steps of actions")
        if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
            raise DatasetError(f"{where}/{key}: holds NaN or inf")
    return Episode(
        observations={key.removeprefix("obs/"): values for key, values in arrays.items() if key.startswith("obs/")},
        actions=arrays["actions"].astype(np.float32),
        rewards=arrays["rewards"].astype(np.float32),
        success=arrays["success"].astype(bool),
        scene_seed=int(demo.attrs.get("scene_seed", -1)),
        attempt=int(demo.attrs.get("attempt", -1)),
    )


def observation_bytes(path: str | Path, tasks: list[str], obs_keys: list[str]) -> dict[str, int]:
    """Uncompressed bytes of each observation key over the demos of `tasks`, from the file's
    metadata (nothing is read); DatasetError naming the file when it is not readable."""
    import h5py

    totals = dict.fromkeys(obs_keys, 0)
    try:
        with h5py.File(path, "r") as handle:
            for task in tasks:
                group = handle.get(f"data/{task}")
                for demo in group.values() if group is not None else ():
                    for key in obs_keys:
                        if f"obs/{key}" in demo:
                            array = demo[f"obs/{key}"]
                            totals[key] += int(np.prod(array.shape, dtype=np.int64)) * array.dtype.itemsize
    except _CORRUPT as error:
        raise DatasetError(f"{path}: corrupt HDF5 data ({type(error).__name__}: {error})") from None
    return totals


def _read_task(
    path: Path,
    handle: Any,
    task: str,
    obs_keys: list[str],
    attrs: dict[str, Any],
    action_dim: int | None,
    streamed: set[str],
    limit: int | None = None,
) -> TaskData:
    if f"data/{task}" not in handle:
        raise DatasetError(f"{path}: no task {task!r} (dataset tasks: {', '.join(attrs['tasks'])})")
    group = handle[f"data/{task}"]
    demo_names = sorted((n for n in group if n.startswith("demo_")), key=lambda n: int(n.split("_")[1]))
    if not demo_names:
        raise DatasetError(f"{path}: task {task!r} has no demos")
    if limit is not None:
        if limit > len(demo_names):
            raise DatasetError(f"{path}: task {task!r} has {len(demo_names)} demos, fewer than data.train_demos.{task} = {limit}")
        demo_names = demo_names[:limit]
    spec = attrs["observation_spec"]
    observations: dict[str, list[np.ndarray]] = {key: [] for key in obs_keys}
    actions: list[np.ndarray] = []
    for name in demo_names:
        demo = group[name]
        where = f"{path}:/data/{task}/{name}"
        if "actions" not in demo:
            raise DatasetError(f"{where}: missing 'actions'")
        _check_declared_size(where, demo["actions"])
        demo_actions = np.asarray(demo["actions"], dtype=np.float32)
        if demo_actions.ndim != 2 or (action_dim is not None and demo_actions.shape[1] != action_dim):
            raise DatasetError(f"{where}/actions: shape {demo_actions.shape} does not match action dim {action_dim}")
        if demo_actions.shape[0] == 0:  # would shift every later sample onto the wrong task's rows
            raise DatasetError(f"{where}: an empty demo (0 steps)")
        if not np.isfinite(demo_actions).all():
            raise DatasetError(f"{where}/actions: holds NaN or inf")
        for key in obs_keys:
            if f"obs/{key}" not in demo:
                raise DatasetError(f"{where}: missing observation key {key!r} (keys: {', '.join(demo['obs'])})")
            _check_declared_size(f"{where}/obs", demo[f"obs/{key}"])
            stored = demo[f"obs/{key}"]
            # a streamed key: its shape is checked from the metadata (a view of one zero), its values stay in the file
            values = np.broadcast_to(np.zeros((), stored.dtype), stored.shape) if key in streamed else np.asarray(stored)
            expected = tuple(spec[key]["shape"]) if key in spec else None
            if values.shape[0] != demo_actions.shape[0] or (expected and values.shape[1:] != expected):
                raise DatasetError(f"{where}/obs/{key}: shape {values.shape} does not match {expected} x {demo_actions.shape[0]} steps")
            if key in streamed:
                continue
            if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
                raise DatasetError(f"{where}/obs/{key}: holds NaN or inf")
            observations[key].append(values)
        actions.append(demo_actions)
    stats: dict[str, dict[str, np.ndarray]] = {}
    for key in [k for k in obs_keys if not k.startswith("rgb_")] + ["actions"]:
        stats_path = f"stats/{task}/{key}"
        if stats_path not in handle:
            raise DatasetError(f"{path}: missing statistics {stats_path!r}")
        stats[key] = {name: np.asarray(handle[f"{stats_path}/{name}"], dtype=np.float32) for name in ("mean", "std", "min", "max")}
        if limit is not None and key not in streamed:  # the statistics of the demos trained on, not of all stored
            used = np.concatenate(actions if key == "actions" else observations[key])
            stats[key] = summary_stats(used.reshape(len(used), -1))
        width = actions[0].shape[1] if key == "actions" else int(np.prod(observations[key][0].shape[1:]))
        for name, values in stats[key].items():
            if values.shape != (width,) and values.reshape(-1).shape != (width,):
                raise DatasetError(f"{path}:/{stats_path}/{name}: shape {values.shape} does not match the {width} values of {key!r}")
    return TaskData(
        observations={k: np.concatenate(v) for k, v in observations.items() if k not in streamed},
        actions=np.concatenate(actions),
        stats=stats,
        num_demos=len(demo_names),
        demos=[f"data/{task}/{name}" for name in demo_names],
        lengths=[int(a.shape[0]) for a in actions],
    )
