"""rlmtl datasets to and from LeRobot's dataset format v3.0 (`rlmtl export/import --format lerobot`).

v3.0 is the `CODEBASE_VERSION` of lerobot 0.4.4, the current `lerobot` on PyPI
(lerobot/datasets/lerobot_dataset.py:83). The layout, from that package's source::

    meta/info.json               codebase_version, fps, features, total_*, chunks_size, *_files_size_in_mb,
                                 data_path, video_path (utils.py:795-831 create_empty_dataset_info)
    meta/stats.json              per feature: min, max, mean, std, count, q01..q99 (compute_stats.py:477-527;
                                 cameras per channel, [3, 1, 1] in [0, 1])
    meta/tasks.parquet           a pandas frame: index = task string, column task_index (utils.py:336-344)
    meta/episodes/chunk-XXX/file-XXX.parquet
                                 one row per episode: episode_index, tasks, length, data/chunk_index, data/file_index,
                                 dataset_from_index, dataset_to_index, videos/<key>/{chunk_index, file_index,
                                 from_timestamp, to_timestamp}, meta/episodes/*, stats/<feature>/<stat>
                                 (lerobot_dataset.py:328-425, 1486-1583)
    data/chunk-XXX/file-XXX.parquet
                                 one row per frame: every non-video feature, plus timestamp (= frame_index / fps),
                                 frame_index, episode_index, index, task_index (utils.py:73-79); vectors are
                                 fixed-size lists (utils.py:564-599)
    videos/<key>/chunk-XXX/file-XXX.mp4
                                 the episodes' frames one after another; an episode's frame t is at
                                 from_timestamp + t / fps (lerobot_dataset.py:1048-1067)

LeRobotDataset(repo_id, root=OUT) reads an export from disk, without the Hub.

Features, rlmtl key <-> LeRobot (as lerobot's own Meta-World env names them, envs/metaworld.py:166-194:
the 4-d hand position and gripper is `observation.state`): `proprio` <-> `observation.state`,
`state` <-> `observation.environment_state`, `rgb_<camera>` <-> `observation.images.<camera>`
(video), any other key `k` <-> `observation.k`; actions <-> `action`; rewards <-> `next.reward`,
success <-> `next.success`, and `next.done` is true on each episode's last frame. Each rlmtl task is
one LeRobot task whose string is the task name. Videos are H.264 (one of lerobot's codecs,
video_utils.py:52), yuv420p (lerobot's pixel format; yuv444p for odd sides), a keyframe every
2 frames as lerobot encodes (video_utils.py:396), no B-frames, CRF 18: lossy, so images come back
close to, not equal to, the originals. fps: `--fps`, else the suite's `steps_per_second`
(Meta-World: 80, its render_fps), else 10. `rlmtl_export.json` at the root carries what LeRobot has
no place for: the source dataset's attributes, each episode's scene seed and attempt, and the
per-task statistics.

Import reads any v3.0 dataset: the episodes of each `--task TASK=STRING` (default: every task string,
each taken as an rlmtl task of that name), vector features and cameras (video or image) as above,
`next.reward` (zeros when absent), `next.success` (else `next.done`, else true on the last frame).
Every file and key is checked before anything is written: a missing key, lengths that disagree
(episode metadata, data rows, frame indices, video frames), NaN/inf, a task that is not in the
dataset or not in the suite is one line naming the file and key.
"""

from __future__ import annotations

import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from rlmtl import __version__
from rlmtl.data.dataset import Episode, TaskRecord, iter_episodes, read_attrs
from rlmtl.data.interchange import (
    DEFAULT_SUITE,
    MARKER_FILE,
    MAX_IMAGE_SIDE,
    TaskChoice,
    atomic_folder,
    check_export_target,
    check_finite,
    check_task,
    export_lock,
    export_metadata,
    imported_attrs,
    observation_spec,
    output_error,
    read_marker,
    read_task_stats,
    suite_tasks,
    warn,
    write_import,
)
from rlmtl.errors import DatasetError, OutputError, RlmtlError
from rlmtl.progress import progress_bar

CODEBASE_VERSION = "v3.0"  # lerobot 0.4.4: lerobot/datasets/lerobot_dataset.py:83
CHUNKS_SIZE = 1000  # utils.py:50-52: files per chunk folder, MB per data and video file
DATA_FILE_MB = 100
VIDEO_FILE_MB = 200
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"  # utils.py:61-66
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)  # compute_stats.py:20 DEFAULT_QUANTILES
DEFAULT_FPS = 10
VIDEO_CRF = 18
INDEX_FEATURES = ("timestamp", "frame_index", "episode_index", "index", "task_index")  # utils.py:73-79


def _require_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise RlmtlError("LeRobot datasets are parquet files: pip install 'rlmtl[io]' (pyarrow, imageio-ffmpeg)") from None


def feature_name(key: str) -> str:
    """The LeRobot feature of an rlmtl observation key."""
    if key == "proprio":
        return "observation.state"
    if key == "state":
        return "observation.environment_state"
    if key.startswith("rgb_"):
        return "observation.images." + key.removeprefix("rgb_")
    return "observation." + key


def rlmtl_key(feature: str) -> str:
    """The rlmtl observation key of a LeRobot `observation.*` feature (the inverse of feature_name)."""
    if feature == "observation.state":
        return "proprio"
    if feature == "observation.environment_state":
        return "state"
    if feature.startswith("observation.images."):
        return "rgb_" + feature.removeprefix("observation.images.")
    if feature == "observation.image":
        return "rgb_image"
    return feature.removeprefix("observation.")


# ---------------------------------------------------------------- export


def export_lerobot(dataset: str | Path, out: str | Path, fps: int | None = None, progress: bool = True) -> Path:
    """Write the rlmtl dataset `dataset` as the LeRobot v3.0 dataset folder `out`. Returns `out`."""
    from rlmtl.envs import make_suite

    _require_pyarrow()
    dataset, out = Path(dataset), Path(out)
    attrs = read_attrs(dataset)
    tasks = list(attrs["tasks"])
    check_export_target(out, "folder")
    if fps is None:
        try:
            fps = make_suite(attrs["backend"], attrs["suite"]).steps_per_second or DEFAULT_FPS
        except KeyError:
            fps = DEFAULT_FPS
    spec = attrs["observation_spec"]
    features = _features(spec, int(attrs["action_spec"]["shape"][0]))
    meta = export_metadata(dataset, attrs, "lerobot")
    import h5py

    with h5py.File(dataset, "r") as handle:
        total = sum(int(handle[f"data/{task}"].attrs.get("num_demos", 0)) for task in tasks)
    bar = progress_bar(total, "export lerobot", "episode", progress)
    try:
        with export_lock(out, "rlmtl export"), atomic_folder(out) as root:
            writer = _Writer(root, features, fps)
            episodes_meta = []
            for task_index, task in enumerate(tasks):
                for episode in iter_episodes(dataset, task):
                    writer.add(episode, task_index, task)
                    episodes_meta.append(
                        {"episode_index": writer.episodes - 1, "task": task, "scene_seed": episode.scene_seed, "attempt": episode.attempt}
                    )
                    bar.update(1)
            writer.finish(tasks)
            marker = {
                **meta,
                "lerobot_codebase_version": CODEBASE_VERSION,
                "features": {key: feature_name(key) for key in spec},
                "tasks": tasks,
                "episodes": episodes_meta,
                "per_task_stats": {task: read_task_stats(dataset, task) for task in tasks},
            }
            (root / MARKER_FILE).write_text(json.dumps(marker, indent=2))
    except OSError as error:
        raise output_error(out, error) from None
    bar.close()
    print(f"rlmtl export: wrote {out} ({len(tasks)} tasks, {total} episodes, LeRobot {CODEBASE_VERSION}, {fps} fps)", file=sys.stderr)
    return out


def _features(spec: dict[str, Any], action_dim: int) -> dict[str, dict[str, Any]]:
    features: dict[str, dict[str, Any]] = {}
    for key, item in spec.items():
        shape = [int(s) for s in item["shape"]]
        if len(shape) == 3:
            features[feature_name(key)] = {"dtype": "video", "shape": shape, "names": ["height", "width", "channels"]}
        else:
            features[feature_name(key)] = {"dtype": "float32", "shape": shape, "names": None}
    features["action"] = {"dtype": "float32", "shape": [action_dim], "names": None}
    features["next.reward"] = {"dtype": "float32", "shape": [1], "names": None}
    features["next.done"] = {"dtype": "bool", "shape": [1], "names": None}
    features["next.success"] = {"dtype": "bool", "shape": [1], "names": None}
    for name, dtype in zip(INDEX_FEATURES, ("float32", "int64", "int64", "int64", "int64")):
        features[name] = {"dtype": dtype, "shape": [1], "names": None}
    return features


class _Stats:
    """Running statistics of one feature, as lerobot's stats.json holds them: over frames for
    vectors ([D]; [1] for scalars), per channel in [0, 1] for cameras ([3, 1, 1], quantiles exact
    from a 256-bin histogram of the uint8 values)."""

    def __init__(self, camera: bool) -> None:
        self.camera = camera
        self.parts: list[np.ndarray] = []
        self.histogram = np.zeros((3, 256), np.int64)
        self.count = 0

    def add(self, values: np.ndarray) -> None:
        self.count += len(values)
        if self.camera:
            for channel in range(3):
                self.histogram[channel] += np.bincount(values[..., channel].reshape(-1), minlength=256)
        else:
            self.parts.append(values.reshape(len(values), -1).astype(np.float64))

    def result(self) -> dict[str, list]:
        if self.camera:
            return _histogram_stats(self.histogram, self.count)
        return _vector_stats(np.concatenate(self.parts))


def _vector_stats(values: np.ndarray) -> dict[str, list]:
    stats = {
        "min": values.min(0),
        "max": values.max(0),
        "mean": values.mean(0),
        "std": values.std(0),
        "count": np.array([len(values)]),
    }
    for q in QUANTILES:
        stats[f"q{int(q * 100):02d}"] = np.quantile(values, q, axis=0)
    return {name: value.tolist() for name, value in stats.items()}


def _histogram_stats(histogram: np.ndarray, frames: int) -> dict[str, list]:
    levels = np.arange(256, dtype=np.float64)
    total = histogram.sum(1, keepdims=True)
    mean = (histogram * levels).sum(1) / total[:, 0]
    std = np.sqrt((histogram * (levels - mean[:, None]) ** 2).sum(1) / total[:, 0])
    cumulative = np.cumsum(histogram, 1)
    stats = {
        "min": np.array([np.flatnonzero(h)[0] for h in histogram], np.float64),
        "max": np.array([np.flatnonzero(h)[-1] for h in histogram], np.float64),
        "mean": mean,
        "std": std,
    }
    for q in QUANTILES:
        stats[f"q{int(q * 100):02d}"] = np.array([np.searchsorted(c, q * c[-1]) for c in cumulative], np.float64)
    out = {name: (value / 255.0).reshape(3, 1, 1).tolist() for name, value in stats.items()}
    out["count"] = [frames]
    return out


@dataclass
class _FileCursor:
    """Which chunk/file a stream of episodes is writing, and when to start the next file."""

    limit_bytes: int
    chunk: int = 0
    file: int = 0
    frames: int = 0  # frames already in the current file

    def advance(self) -> None:
        self.chunk, self.file = (self.chunk + 1, 0) if self.file == CHUNKS_SIZE - 1 else (self.chunk, self.file + 1)
        self.frames = 0


@dataclass
class _Video:
    key: str
    size: tuple[int, int]  # (width, height)
    cursor: _FileCursor
    path: Path | None = None
    writer: Any = None
    pix_fmt: str = "yuv420p"


@dataclass
class _Writer:
    """Streams episodes into data parquet files and one video per camera, and keeps what the meta
    files need (stats, episode rows)."""

    root: Path
    features: dict[str, dict[str, Any]]
    fps: int
    episodes: int = 0
    frames: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, _Stats] = field(default_factory=dict)
    videos: dict[str, _Video] = field(default_factory=dict)
    data_cursor: _FileCursor = field(default_factory=lambda: _FileCursor(DATA_FILE_MB << 20))
    data_writer: Any = None
    data_path: Path | None = None

    def __post_init__(self) -> None:
        import pyarrow as pa

        self.schema = pa.schema(
            [(name, _arrow_type(ft)) for name, ft in self.features.items() if ft["dtype"] != "video"],
            metadata={"huggingface": json.dumps({"info": {"features": _hf_features(self.features)}})},
        )
        for name, ft in self.features.items():
            self.stats[name] = _Stats(camera=ft["dtype"] == "video")
            if ft["dtype"] == "video":
                height, width = ft["shape"][0], ft["shape"][1]
                pix_fmt = "yuv420p" if height % 2 == 0 and width % 2 == 0 else "yuv444p"  # 4:2:0 needs even sides
                self.videos[name] = _Video(name, (width, height), _FileCursor(VIDEO_FILE_MB << 20), pix_fmt=pix_fmt)

    def add(self, episode: Episode, task_index: int, task: str) -> None:
        import pyarrow as pa

        length = episode.length
        columns = self._columns(episode, task_index)
        row: dict[str, Any] = {"episode_index": self.episodes, "tasks": [task], "length": length}
        row.update(self._write_data(pa.table(columns, schema=self.schema), length))
        for name, video in self.videos.items():
            row.update(self._write_video(video, episode.observations[_key_of(name)]))
        row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
        for name, values in self._values.items():
            stats = _Stats(camera=False)
            stats.add(values)
            self.stats[name].add(values)
            row.update({f"stats/{name}/{stat}": value for stat, value in stats.result().items()})
        for name in self.videos:
            frames = episode.observations[_key_of(name)]
            stats = _Stats(camera=True)
            stats.add(frames)
            self.stats[name].add(frames)
            row.update({f"stats/{name}/{stat}": value for stat, value in stats.result().items()})
        self.rows.append(row)
        self.episodes += 1
        self.frames += length

    def _columns(self, episode: Episode, task_index: int) -> dict[str, Any]:
        length = episode.length
        frame_index = np.arange(length, dtype=np.int64)
        done = np.zeros(length, bool)
        done[-1] = True
        values: dict[str, np.ndarray] = {}
        for name, ft in self.features.items():
            if ft["dtype"] == "video":
                continue
            if name.startswith("observation."):
                values[name] = episode.observations[_key_of(name)].astype(np.float32)
        values.update(
            {
                "action": episode.actions.astype(np.float32),
                "next.reward": episode.rewards.astype(np.float32),
                "next.done": done,
                "next.success": episode.success.astype(bool),
                "timestamp": (frame_index / self.fps).astype(np.float32),
                "frame_index": frame_index,
                "episode_index": np.full(length, self.episodes, np.int64),
                "index": np.arange(self.frames, self.frames + length, dtype=np.int64),
                "task_index": np.full(length, task_index, np.int64),
            }
        )
        self._values = {name: values[name] for name in self.schema.names}
        return {name: _arrow_column(values[name]) for name in self.schema.names}

    def _write_data(self, table: Any, length: int) -> dict[str, int]:
        import pyarrow.parquet as pq

        cursor = self.data_cursor
        if self.data_writer is not None and _size(self.data_path) >= cursor.limit_bytes:
            self.data_writer.close()
            self.data_writer = None
            cursor.advance()
        if self.data_writer is None:
            self.data_path = self.root / DATA_PATH.format(chunk_index=cursor.chunk, file_index=cursor.file)
            self.data_path.parent.mkdir(parents=True, exist_ok=True)
            self.data_writer = pq.ParquetWriter(self.data_path, self.schema, compression="snappy")  # lerobot_dataset.py:1481
        self.data_writer.write_table(table)
        cursor.frames += length
        return {
            "data/chunk_index": cursor.chunk,
            "data/file_index": cursor.file,
            "dataset_from_index": self.frames,
            "dataset_to_index": self.frames + length,
        }

    def _write_video(self, video: _Video, frames: np.ndarray) -> dict[str, Any]:
        cursor = video.cursor
        if video.writer is not None and _size(video.path) >= cursor.limit_bytes:
            video.writer.close()
            video.writer = None
            cursor.advance()
        if video.writer is None:
            video.path = self.root / VIDEO_PATH.format(video_key=video.key, chunk_index=cursor.chunk, file_index=cursor.file)
            video.path.parent.mkdir(parents=True, exist_ok=True)
            video.writer = _open_video(video.path, video.size, self.fps, video.pix_fmt)
        for frame in frames:
            video.writer.send(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
        start = cursor.frames
        cursor.frames += len(frames)
        return {
            f"videos/{video.key}/chunk_index": cursor.chunk,
            f"videos/{video.key}/file_index": cursor.file,
            f"videos/{video.key}/from_timestamp": start / self.fps,
            f"videos/{video.key}/to_timestamp": cursor.frames / self.fps,
        }

    def finish(self, tasks: list[str]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.data_writer is not None:
            self.data_writer.close()
        for video in self.videos.values():
            if video.writer is not None:
                video.writer.close()
        meta = self.root / "meta"
        (meta / "episodes" / "chunk-000").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(self.rows), self.root / EPISODES_PATH.format(chunk_index=0, file_index=0), compression="snappy")
        pq.write_table(_tasks_table(tasks), meta / "tasks.parquet")
        (meta / "stats.json").write_text(json.dumps({name: stats.result() for name, stats in self.stats.items() if stats.count}, indent=4))
        features = json.loads(json.dumps(self.features))
        for name, video in self.videos.items():
            width, height = video.size
            features[name]["info"] = {  # video_utils.py:976-1008 get_video_info
                "video.height": height,
                "video.width": width,
                "video.codec": "h264",
                "video.pix_fmt": video.pix_fmt,
                "video.is_depth_map": False,
                "video.fps": self.fps,
                "video.channels": 3,
                "has_audio": False,
            }
        info = {  # utils.py:795-831 create_empty_dataset_info, filled as save_episode does (lerobot_dataset.py:416-422)
            "codebase_version": CODEBASE_VERSION,
            "robot_type": None,
            "total_episodes": self.episodes,
            "total_frames": self.frames,
            "total_tasks": len(tasks),
            "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": DATA_FILE_MB,
            "video_files_size_in_mb": VIDEO_FILE_MB,
            "fps": self.fps,
            "splits": {"train": f"0:{self.episodes}"},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if self.videos else None,
            "features": features,
        }
        (meta / "info.json").write_text(json.dumps(info, indent=4))


def _size(path: Path) -> int:
    """Bytes written so far (a writer may not have created its file yet)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _key_of(name: str) -> str:
    return rlmtl_key(name)


def _arrow_column(values: np.ndarray) -> Any:
    """[N] as a plain column, [N, D] as a fixed-size list column."""
    import pyarrow as pa

    if values.ndim == 1:
        return pa.array(values)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def _arrow_type(ft: dict[str, Any]) -> Any:
    """The arrow type lerobot's features map to (datasets.Value for [1], a fixed-size list for [D])."""
    import pyarrow as pa

    scalar = {"float32": pa.float32(), "int64": pa.int64(), "bool": pa.bool_()}[ft["dtype"]]
    return scalar if list(ft["shape"]) == [1] else pa.list_(scalar, int(ft["shape"][0]))


def _hf_features(features: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The `huggingface` schema metadata `datasets` writes with a table of these features."""
    out = {}
    for name, ft in features.items():
        if ft["dtype"] == "video":
            continue
        value = {"dtype": ft["dtype"], "_type": "Value"}
        out[name] = value if list(ft["shape"]) == [1] else {"feature": value, "length": int(ft["shape"][0]), "_type": "List"}
    return out


def _tasks_table(tasks: list[str]) -> Any:
    """meta/tasks.parquet as pandas writes `DataFrame({"task_index": ...}, index=tasks)` (utils.py:336-339):
    the task strings are the frame's index, restored by pandas from the schema's `pandas` metadata."""
    import pyarrow as pa

    pandas_meta = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [
            {"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}
        ],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64", "metadata": None},
            {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
        ],
        "creator": {"library": "rlmtl", "version": __version__},
        "pandas_version": "2.2.0",
    }
    schema = pa.schema([("task_index", pa.int64()), ("__index_level_0__", pa.string())], metadata={"pandas": json.dumps(pandas_meta)})
    return pa.table({"task_index": list(range(len(tasks))), "__index_level_0__": list(tasks)}, schema=schema)


def _open_video(path: Path, size: tuple[int, int], fps: int, pix_fmt: str) -> Any:
    """A started imageio-ffmpeg writer of raw RGB frames to an H.264 mp4."""
    try:
        import imageio_ffmpeg
    except ImportError:
        raise OutputError("exporting cameras to LeRobot needs imageio-ffmpeg: pip install 'rlmtl[io]'") from None
    writer = imageio_ffmpeg.write_frames(
        str(path.absolute()),
        size,
        fps=fps,
        codec="libx264",
        pix_fmt_in="rgb24",
        pix_fmt_out=pix_fmt,
        quality=None,
        macro_block_size=1,
        ffmpeg_log_level="error",
        output_params=["-g", "2", "-bf", "0", "-crf", str(VIDEO_CRF)],
    )
    writer.send(None)
    return writer


# ---------------------------------------------------------------- import


@dataclass
class _Source:
    """A LeRobot dataset folder, its metadata read and checked."""

    root: Path
    info: dict[str, Any]
    tasks: dict[int, str]  # task_index -> task string
    episodes: list[dict[str, Any]]
    marker: dict[str, Any] | None

    @property
    def fps(self) -> int:
        return int(self.info["fps"])

    def path(self, template_key: str, **fields: Any) -> Path:
        return self.root / self.info[template_key].format(**fields)


def import_lerobot(
    source: str | Path,
    out: str | Path,
    choices: list[TaskChoice],
    backend: str | None = None,
    suite: str | None = None,
    progress: bool = True,
) -> Path:
    """Convert the LeRobot v3.0 dataset folder `source` into an rlmtl dataset at `out`."""
    _require_pyarrow()
    root, out = Path(source), Path(out)
    data = _load_source(root)
    exported = data.marker
    source_attrs = exported["dataset_attrs"] if exported else {}
    backend = backend or source_attrs.get("backend") or DEFAULT_SUITE[0]
    suite = suite or source_attrs.get("suite") or DEFAULT_SUITE[1]
    known = suite_tasks(backend, suite)
    tasks_file = root / "meta" / "tasks.parquet"
    strings = list(data.tasks.values())
    wanted = choices or [TaskChoice(s, s) for s in strings]
    for choice in wanted:
        if choice.key not in strings:
            raise DatasetError(f"{tasks_file}: no task {choice.key!r} (tasks: {', '.join(strings)})")
        check_task(f"{tasks_file}: task {choice.key!r}", choice.task, backend, suite, known)
    features = _importable_features(data)
    by_task = _episodes_by_task(data, wanted)
    for episodes in by_task.values():
        for episode in episodes:
            _check_episode(data, episode, features)
    spec = observation_spec({rlmtl_key(name): tuple(ft["shape"]) for name, ft in features.items()})
    action_dim = int(data.info["features"]["action"]["shape"][0])
    attrs = imported_attrs(backend, suite, [c.task for c in wanted], spec, action_dim, "lerobot", [root], exported)
    seeds = {int(e["episode_index"]): e for e in (exported or {}).get("episodes", [])}
    bar = progress_bar(sum(len(v) for v in by_task.values()), "import lerobot", "episode", progress)

    def records() -> Iterator[TaskRecord]:
        for choice in wanted:
            episodes = [_read_episode(data, episode, features, seeds.get(int(episode["episode_index"]))) for episode in by_task[choice.key]]
            bar.update(len(episodes))
            yield TaskRecord(choice.task, known.index(choice.task), episodes, len(episodes), len(episodes))

    write_import(out, attrs, records, "rlmtl import")
    bar.close()
    print(f"rlmtl import: wrote {out} ({len(wanted)} tasks from {root})", file=sys.stderr)
    return out


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing (not a LeRobot dataset folder)") from None
    except (OSError, ValueError) as error:
        raise DatasetError(f"{path}: not readable JSON ({error})") from None


def _load_source(root: Path) -> _Source:
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder (expected a LeRobot dataset root: meta/, data/, videos/)")
    info_path = root / "meta" / "info.json"
    info = _load_json(info_path)
    if not isinstance(info, dict):
        raise DatasetError(f"{info_path}: not a JSON object")
    for key in ("codebase_version", "fps", "features", "data_path", "total_episodes", "total_frames"):
        if key not in info:
            raise DatasetError(f"{info_path}: missing {key!r}")
    if str(info["codebase_version"]).split(".")[0] != CODEBASE_VERSION.split(".")[0]:
        raise DatasetError(
            f"{info_path}: codebase_version {info['codebase_version']} is not {CODEBASE_VERSION} (lerobot 0.4.x); "
            "convert it with lerobot's convert_dataset_v21_to_v30 first"
        )
    if not isinstance(info["fps"], (int, float)) or not 0 < info["fps"] <= 10_000:
        raise DatasetError(f"{info_path}: fps {info['fps']!r} is not a positive rate")
    features = info["features"]
    if not isinstance(features, dict):
        raise DatasetError(f"{info_path}: 'features' is not a mapping")
    for key in ("action", *INDEX_FEATURES):
        if key not in features:
            raise DatasetError(f"{info_path}: features: missing {key!r}")
    for name, ft in features.items():
        if not isinstance(ft, dict) or "dtype" not in ft or not isinstance(ft.get("shape"), (list, tuple)):
            raise DatasetError(f"{info_path}: features: {name!r} has no dtype and shape")
        if any(not isinstance(s, int) or s <= 0 or s > 1 << 20 for s in ft["shape"]):
            raise DatasetError(f"{info_path}: features: {name!r} declares shape {ft['shape']}")
    action = features["action"]
    if len(action["shape"]) != 1 or action["dtype"] not in ("float32", "float64"):
        raise DatasetError(f"{info_path}: features: 'action' is {action['dtype']} {action['shape']}, not a float vector")
    videos = [name for name, ft in features.items() if ft["dtype"] == "video"]
    if videos and "video_path" not in info:
        raise DatasetError(f"{info_path}: missing 'video_path' (features {videos} are videos)")
    for template in ("data_path", *(["video_path"] if videos else [])):
        value = info[template]
        if not isinstance(value, str) or value.startswith("/") or ".." in Path(value).parts:
            raise DatasetError(f"{info_path}: {template} {value!r} is not a relative path template")
    return _Source(root, info, _read_tasks(root / "meta" / "tasks.parquet"), _read_episode_rows(root, info, videos), read_marker(root))


def _read_tasks(path: Path) -> dict[int, str]:
    """task_index -> task string, from the pandas frame lerobot writes (index = task string)."""
    import pyarrow.parquet as pq

    if not path.is_file():
        raise DatasetError(f"{path}: missing")
    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise DatasetError(f"{path}: not a readable parquet file ({error})") from None
    if "task_index" not in table.column_names:
        raise DatasetError(f"{path}: missing column 'task_index'")
    pandas_meta = json.loads((table.schema.metadata or {}).get(b"pandas", b"{}"))
    names = [c for c in pandas_meta.get("index_columns", []) if isinstance(c, str) and c in table.column_names]
    names += [c for c in ("task", "__index_level_0__") if c in table.column_names and c not in names]
    if not names:
        raise DatasetError(f"{path}: missing the task strings (the frame's index or a 'task' column)")
    strings = table.column(names[0]).to_pylist()
    indices = table.column("task_index").to_pylist()
    if any(not isinstance(s, str) for s in strings) or any(not isinstance(i, int) for i in indices) or len(set(indices)) != len(indices):
        raise DatasetError(f"{path}: task strings and task_index must be strings and distinct integers")
    return dict(zip(indices, strings))


def _read_episode_rows(root: Path, info: dict[str, Any], videos: list[str]) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    folder = root / "meta" / "episodes"
    paths = sorted(folder.glob("*/*.parquet"))
    if not paths:
        raise DatasetError(f"{folder}: missing (no episodes/chunk-*/file-*.parquet)")
    required = ["episode_index", "tasks", "length", "data/chunk_index", "data/file_index", "dataset_from_index", "dataset_to_index"]
    for key in videos:
        required += [f"videos/{key}/{name}" for name in ("chunk_index", "file_index", "from_timestamp", "to_timestamp")]
    rows: list[dict[str, Any]] = []
    for path in paths:
        try:
            names = pq.read_schema(path).names
        except Exception as error:
            raise DatasetError(f"{path}: not a readable parquet file ({error})") from None
        missing = [key for key in required if key not in names]
        if missing:
            raise DatasetError(f"{path}: missing column {missing[0]!r}")
        table = pq.read_table(path, columns=required)
        for row in table.to_pylist():
            if any(row[key] is None for key in required):
                key = next(key for key in required if row[key] is None)
                raise DatasetError(f"{path}: episode {row['episode_index']}: {key!r} is empty")
            row["_file"] = path
            rows.append(row)
    rows.sort(key=lambda row: row["episode_index"])
    if len(rows) != int(info["total_episodes"]):
        raise DatasetError(f"{root / 'meta' / 'info.json'}: total_episodes is {info['total_episodes']} but meta/episodes has {len(rows)}")
    total = 0
    for row in rows:
        where = f"{row['_file']}: episode {row['episode_index']}"
        length = row["length"]
        if not isinstance(length, int) or length <= 0:
            raise DatasetError(f"{where}: 'length' {length!r} is not a positive count")
        if row["dataset_to_index"] - row["dataset_from_index"] != length:
            raise DatasetError(
                f"{where}: 'dataset_to_index' - 'dataset_from_index' = {row['dataset_to_index'] - row['dataset_from_index']} but 'length' is {length}"
            )
        total += length
    if total != int(info["total_frames"]):
        raise DatasetError(
            f"{root / 'meta' / 'info.json'}: total_frames is {info['total_frames']} but the episodes' lengths add up to {total}"
        )
    return rows


def _importable_features(data: _Source) -> dict[str, dict[str, Any]]:
    """The observation features rlmtl can hold (vectors, cameras), the others named in a warning."""
    kept, skipped = {}, []
    info_path = data.root / "meta" / "info.json"
    for name, ft in data.info["features"].items():
        if not name.startswith("observation."):
            continue
        shape = tuple(ft["shape"])
        if ft["dtype"] in ("video", "image"):
            if len(shape) != 3 or shape[2] != 3 or (ft.get("names") and list(ft["names"])[:1] == ["channels"]):
                skipped.append(name)
                continue
            if shape[0] > MAX_IMAGE_SIDE or shape[1] > MAX_IMAGE_SIDE:
                raise DatasetError(f"{info_path}: features: {name!r} declares images of {shape}")
            kept[name] = ft
        elif ft["dtype"] in ("float32", "float64", "int64", "int32", "bool") and len(shape) == 1:
            kept[name] = ft
        else:
            skipped.append(name)
    if skipped:
        warn("import", f"{info_path}: features {', '.join(skipped)} are neither vectors nor H x W x 3 cameras; skipped")
    if not kept:
        raise DatasetError(f"{info_path}: features: no observation.* feature rlmtl can use")
    return kept


def _episodes_by_task(data: _Source, wanted: list[TaskChoice]) -> dict[str, list[dict[str, Any]]]:
    by_task: dict[str, list[dict[str, Any]]] = {choice.key: [] for choice in wanted}
    for row in data.episodes:
        tasks = list(row["tasks"])
        selected = [t for t in tasks if t in by_task]
        if selected and len(tasks) != 1:
            raise DatasetError(f"{row['_file']}: episode {row['episode_index']}: 'tasks' is {tasks}; rlmtl needs one task per episode")
        if selected:
            by_task[selected[0]].append(row)
    for key, rows in by_task.items():
        if not rows:
            raise DatasetError(f"{data.root / 'meta' / 'episodes'}: no episode of task {key!r}")
    return by_task


def _check_episode(data: _Source, row: dict[str, Any], features: dict[str, dict[str, Any]]) -> None:
    """Files and columns of one episode, from metadata only (nothing is decoded)."""
    import pyarrow.parquet as pq

    path = data.path("data_path", chunk_index=row["data/chunk_index"], file_index=row["data/file_index"])
    if not path.is_file():
        raise DatasetError(f"{path}: missing (episode {row['episode_index']}'s data)")
    try:
        metadata = pq.read_metadata(path)
    except Exception as error:
        raise DatasetError(f"{path}: not a readable parquet file ({error})") from None
    names = metadata.schema.to_arrow_schema().names
    needed = ["action", "frame_index", "episode_index", *(name for name, ft in features.items() if ft["dtype"] != "video")]
    missing = [name for name in needed if name not in names]
    if missing:
        raise DatasetError(f"{path}: missing column {missing[0]!r}")
    declared = sum(metadata.row_group(g).total_byte_size for g in range(metadata.num_row_groups))
    if declared > max(1 << 20, 1024 * path.stat().st_size):
        raise DatasetError(f"{path}: declares {declared} bytes of data but the file has {path.stat().st_size}")
    if row["length"] > metadata.num_rows:
        raise DatasetError(f"{path}: {metadata.num_rows} rows but episode {row['episode_index']} has 'length' {row['length']}")
    for name, ft in features.items():
        if ft["dtype"] == "video":
            video = data.path(
                "video_path", video_key=name, chunk_index=row[f"videos/{name}/chunk_index"], file_index=row[f"videos/{name}/file_index"]
            )
            if not video.is_file():
                raise DatasetError(f"{video}: missing (episode {row['episode_index']}'s {name})")
            span = (row[f"videos/{name}/to_timestamp"] - row[f"videos/{name}/from_timestamp"]) * data.fps
            if abs(span - row["length"]) > 0.5:
                raise DatasetError(
                    f"{row['_file']}: episode {row['episode_index']}: 'videos/{name}/to_timestamp' - 'from_timestamp' spans {span:.2f} frames but 'length' is {row['length']}"
                )


def _read_episode(data: _Source, row: dict[str, Any], features: dict[str, dict[str, Any]], recorded: dict[str, Any] | None) -> Episode:
    import pyarrow.parquet as pq

    path = data.path("data_path", chunk_index=row["data/chunk_index"], file_index=row["data/file_index"])
    index = int(row["episode_index"])
    try:
        names = pq.read_schema(path).names
        columns = ["action", "frame_index", "episode_index", *(n for n in ("next.reward", "next.success", "next.done") if n in names)]
        columns += [name for name, ft in features.items() if ft["dtype"] != "video"]
        table = pq.read_table(path, columns=columns, filters=[("episode_index", "==", index)])
    except (OSError, ValueError, KeyError, TypeError) as error:  # pyarrow's errors derive from these
        raise DatasetError(f"{path}: cannot read episode {index} ({type(error).__name__}: {error})") from None
    where = f"{path}: episode {index}"
    length = int(row["length"])
    if table.num_rows != length:
        raise DatasetError(f"{where}: {table.num_rows} rows but meta/episodes says 'length' {length}")
    frame_index = _column(table, "frame_index", 1, where)[:, 0]
    order = np.argsort(frame_index, kind="stable")
    if not np.array_equal(frame_index[order], np.arange(length)):
        raise DatasetError(f"{where}: 'frame_index' is not 0..{length - 1}")
    action_dim = int(data.info["features"]["action"]["shape"][0])
    actions = _column(table, "action", action_dim, where)[order]
    rewards = _column(table, "next.reward", 1, where)[order, 0] if "next.reward" in columns else np.zeros(length)
    if "next.success" in columns:
        success = _column(table, "next.success", 1, where)[order, 0] != 0
    elif "next.done" in columns:
        success = _column(table, "next.done", 1, where)[order, 0] != 0
    else:
        success = np.arange(length) == length - 1
    observations: dict[str, np.ndarray] = {}
    for name, ft in features.items():
        if ft["dtype"] == "video":
            observations[rlmtl_key(name)] = _video_frames(data, row, name, tuple(ft["shape"]))
        elif ft["dtype"] == "image":
            observations[rlmtl_key(name)] = _image_column(table, name, tuple(ft["shape"]), where)[order]
        else:
            observations[rlmtl_key(name)] = _column(table, name, int(ft["shape"][0]), where)[order].astype(np.float32)
    return Episode(
        observations=observations,
        actions=actions.astype(np.float32),
        rewards=rewards.astype(np.float32),
        success=success,
        scene_seed=int(recorded["scene_seed"]) if recorded else index,
        attempt=int(recorded["attempt"]) if recorded else index,
    )


def _column(table: Any, name: str, width: int, where: str) -> np.ndarray:
    """A column as [N, width] numbers (scalars as [N, 1]); DatasetError naming it for nulls, ragged
    rows, a wrong width or NaN/inf."""
    import pyarrow as pa

    column = table.column(name).combine_chunks()
    if column.null_count:
        raise DatasetError(f"{where}: column {name!r} has empty values")
    if pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type) or pa.types.is_large_list(column.type):
        flat = column.flatten()
        if flat.null_count or len(flat) != len(column) * width:
            raise DatasetError(f"{where}: column {name!r} does not hold {width} values per row")
        values = flat.to_numpy(zero_copy_only=False).reshape(len(column), width)
    else:
        if width != 1:
            raise DatasetError(f"{where}: column {name!r} holds scalars, but the feature has {width} values")
        values = column.to_numpy(zero_copy_only=False).reshape(-1, 1)
    if values.dtype == object:
        raise DatasetError(f"{where}: column {name!r} does not hold numbers")
    check_finite(f"{where}: column {name!r}", values)
    return values


def _image_column(table: Any, name: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    """An `image` feature (a struct of PNG bytes and path per row) as [N, H, W, 3] uint8."""
    from PIL import Image

    frames = []
    for value in table.column(name).to_pylist():
        raw = value.get("bytes") if isinstance(value, dict) else None
        if not raw:
            raise DatasetError(f"{where}: column {name!r} has a row without image bytes")
        try:
            frame = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))
        except Exception as error:
            raise DatasetError(f"{where}: column {name!r} holds an unreadable image ({error})") from None
        if frame.shape != shape:
            raise DatasetError(f"{where}: column {name!r} holds a {frame.shape} image, info.json declares {shape}")
        frames.append(frame)
    return np.stack(frames)


def _video_frames(data: _Source, row: dict[str, Any], name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Frames from_timestamp .. + length / fps of the episode's video, decoded with ffmpeg (an input
    seek to half a frame before the episode's first frame: ffmpeg drops the frames before it)."""
    try:
        import imageio_ffmpeg
    except ImportError:
        raise DatasetError("importing LeRobot videos needs imageio-ffmpeg: pip install 'rlmtl[io]'") from None
    path = data.path(
        "video_path", video_key=name, chunk_index=row[f"videos/{name}/chunk_index"], file_index=row[f"videos/{name}/file_index"]
    )
    length, (height, width) = int(row["length"]), shape[:2]
    start = max(0.0, float(row[f"videos/{name}/from_timestamp"]) - 0.5 / data.fps)
    reader = imageio_ffmpeg.read_frames(
        str(path.absolute()),
        pix_fmt="rgb24",
        input_params=["-ss", f"{start:.6f}"],
        output_params=["-frames:v", str(length)],
        bits_per_pixel=24,
    )
    try:
        meta = next(reader)
        if tuple(meta["size"]) != (width, height):
            raise DatasetError(f"{path}: frames are {meta['size'][0]}x{meta['size'][1]} but info.json declares {name!r} {width}x{height}")
        frames = [np.frombuffer(frame, np.uint8).reshape(height, width, 3) for frame in reader]
    except (RuntimeError, OSError, StopIteration) as error:
        raise DatasetError(f"{path}: cannot decode ({error})") from None
    finally:
        reader.close()
    if len(frames) != length:
        raise DatasetError(
            f"{path}: {len(frames)} frames from {row[f'videos/{name}/from_timestamp']:.4f} s, but episode {row['episode_index']} has 'length' {length}"
        )
    return np.stack(frames)
