"""`rlmtl export/import --format lerobot`: round trips, the v3.0 layout lerobot 0.4.4's LeRobotDataset
reads (checked here against facts from its source; tests/data/test_external_readers.py runs the
class itself), and bad input."""

from __future__ import annotations

import json
import shutil

import imageio_ffmpeg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from interchange_fixtures import TASKS, dataset_content, files_under, make_dataset

from rlmtl.cli import main
from rlmtl.data.dataset import read_attrs

IMAGE_TOLERANCE = 4.0  # mean absolute error per pixel value after H.264 (lossy, as LeRobot's videos are)


def export(tmp_path, cameras=True, name="lr"):
    source = make_dataset(tmp_path / "src.h5", cameras=cameras)
    out = tmp_path / name
    assert main(["export", "--format", "lerobot", str(source), str(out), "--no-progress"]) == 0
    return source, out


@pytest.mark.parametrize("cameras", [False, True])
def test_round_trip(tmp_path, cameras):
    source, out = export(tmp_path, cameras)
    assert main(["import", "--format", "lerobot", str(out), str(tmp_path / "back.h5"), "--no-progress"]) == 0
    original, back = dataset_content(source), dataset_content(tmp_path / "back.h5")
    assert list(original) == list(back) == TASKS
    for task in TASKS:
        assert len(original[task]) == len(back[task])
        for a, b in zip(original[task], back[task]):
            assert set(a) == set(b)
            for key in a:
                if key == "obs/rgb_corner":
                    assert a[key].shape == b[key].shape and b[key].dtype == np.uint8
                    assert np.abs(a[key].astype(int) - b[key].astype(int)).mean() < IMAGE_TOLERANCE
                else:
                    np.testing.assert_array_equal(a[key], b[key], err_msg=f"{task} {key}")
                    assert a[key].dtype == b[key].dtype
    attrs = read_attrs(tmp_path / "back.h5")
    imported = attrs.pop("imported_from")
    assert attrs == read_attrs(source) and imported["format"] == "lerobot" and imported["exported_by_rlmtl"]


def test_the_folder_has_the_v30_layout(tmp_path):
    source, out = export(tmp_path)
    content = dataset_content(source)
    frames = sum(len(d["actions"]) for t in TASKS for d in content[t])
    assert files_under(out) == [
        "data",
        "data/chunk-000",
        "data/chunk-000/file-000.parquet",
        "meta",
        "meta/episodes",
        "meta/episodes/chunk-000",
        "meta/episodes/chunk-000/file-000.parquet",
        "meta/info.json",
        "meta/stats.json",
        "meta/tasks.parquet",
        "rlmtl_export.json",
        "videos",
        "videos/observation.images.corner",
        "videos/observation.images.corner/chunk-000",
        "videos/observation.images.corner/chunk-000/file-000.mp4",
    ]
    info = json.loads((out / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 80  # Meta-World's step rate
    assert info["total_episodes"] == 6 and info["total_frames"] == frames and info["total_tasks"] == 2
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    features = info["features"]
    assert features["observation.state"]["shape"] == [4] and features["observation.environment_state"]["shape"] == [39]
    assert (
        features["observation.images.corner"]["dtype"] == "video" and features["observation.images.corner"]["info"]["video.codec"] == "h264"
    )
    for name in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        assert features[name]["shape"] == [1]
    data = pq.read_table(out / "data/chunk-000/file-000.parquet")
    assert data.schema.field("action").type == pa.list_(pa.float32(), 4)  # datasets' fixed-length List
    assert data.schema.field("next.reward").type == pa.float32() and "observation.images.corner" not in data.column_names
    assert data.column("index").to_pylist() == list(range(frames))
    np.testing.assert_allclose(data.column("timestamp").to_numpy(), data.column("frame_index").to_numpy() / 80, rtol=1e-6)
    tasks = pq.read_table(out / "meta/tasks.parquet")
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["__index_level_0__"]  # the frame's index: the task string
    assert tasks.column("__index_level_0__").to_pylist() == TASKS and tasks.column("task_index").to_pylist() == [0, 1]
    episodes = pq.read_table(out / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["tasks"] for e in episodes] == [["reach-v3"]] * 3 + [["push-v3"]] * 3
    video_frames = imageio_ffmpeg.count_frames_and_secs(str(out / "videos/observation.images.corner/chunk-000/file-000.mp4"))[0]
    assert video_frames == frames
    for episode in episodes:
        assert episode["dataset_to_index"] - episode["dataset_from_index"] == episode["length"]
        span = episode["videos/observation.images.corner/to_timestamp"] - episode["videos/observation.images.corner/from_timestamp"]
        assert span == pytest.approx(episode["length"] / 80)
        assert len(episode["stats/action/mean"]) == 4
    stats = json.loads((out / "meta/stats.json").read_text())
    actions = np.concatenate([d["actions"] for t in TASKS for d in content[t]])
    np.testing.assert_allclose(stats["action"]["mean"], actions.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats["action"]["q50"], np.quantile(actions.astype(np.float64), 0.5, axis=0), rtol=1e-5)
    assert np.asarray(stats["observation.images.corner"]["mean"]).shape == (3, 1, 1) and stats["action"]["count"] == [frames]
    marker = json.loads((out / "rlmtl_export.json").read_text())
    np.testing.assert_allclose(
        marker["per_task_stats"]["push-v3"]["actions"]["mean"],
        np.concatenate([d["actions"] for d in content["push-v3"]]).mean(0),
        rtol=1e-5,
    )


def test_a_foreign_dataset_with_task_strings(tmp_path):
    _, out = export(tmp_path, cameras=False)
    (out / "rlmtl_export.json").unlink()  # as LeRobot itself would have written it
    set_task_strings(out, ["reach the red dot", "push the puck"])
    args = ["import", "--format", "lerobot", str(out), str(tmp_path / "d.h5"), "--task", "push-v3=push the puck", "--no-progress"]
    assert main(args) == 0
    attrs = read_attrs(tmp_path / "d.h5")
    assert attrs["tasks"] == ["push-v3"] and set(attrs["observation_spec"]) == {"proprio", "state"}
    assert len(dataset_content(tmp_path / "d.h5")["push-v3"]) == 3


def set_task_strings(root, strings):
    table = pq.read_table(root / "meta/tasks.parquet")
    table = table.set_column(table.column_names.index("__index_level_0__"), "__index_level_0__", pa.array(strings))
    pq.write_table(table, root / "meta/tasks.parquet")
    path = root / "meta/episodes/chunk-000/file-000.parquet"
    episodes = pq.read_table(path)
    index = episodes.column_names.index("tasks")
    renamed = [[strings[TASKS.index(t[0])]] for t in episodes.column("tasks").to_pylist()]
    pq.write_table(episodes.set_column(index, "tasks", pa.array(renamed)), path)


def edit_info(change):
    def apply(root):
        info = json.loads((root / "meta/info.json").read_text())
        change(info)
        (root / "meta/info.json").write_text(json.dumps(info))

    return apply


def edit_table(relative, change):
    def apply(root):
        path = root / relative
        pq.write_table(change(pq.read_table(path)), path)

    return apply


def drop_row(table, row):
    return pa.concat_tables([table.slice(0, row), table.slice(row + 1)])


def nan_action(table):
    values = table.column("action").combine_chunks().flatten().to_numpy(zero_copy_only=False).copy()
    values[5] = np.nan
    column = pa.FixedSizeListArray.from_arrays(pa.array(values, pa.float32()), 4)
    return table.set_column(table.column_names.index("action"), "action", column)


def set_length(table, episode, length):
    rows = table.to_pylist()
    rows[episode]["length"] = length
    return pa.Table.from_pylist(rows, schema=table.schema)


DATA = "data/chunk-000/file-000.parquet"
EPISODES = "meta/episodes/chunk-000/file-000.parquet"
BAD_INPUTS = [
    # (what, change, --task arguments, file (relative to the root), the rest of the line)
    ("missing key", edit_info(lambda info: info["features"].pop("action")), [], "meta/info.json", ": features: missing 'action'"),
    ("missing column", edit_table(DATA, lambda t: t.drop_columns(["observation.state"])), [], DATA, ": missing column 'observation.state'"),
    (
        "missing episode column",
        edit_table(EPISODES, lambda t: t.drop_columns(["dataset_to_index"])),
        [],
        EPISODES,
        ": missing column 'dataset_to_index'",
    ),
    (
        "mismatched length",
        edit_table(EPISODES, lambda t: set_length(t, 2, 9)),
        [],
        EPISODES,
        ": episode 2: 'dataset_to_index' - 'dataset_from_index' = 6 but 'length' is 9",
    ),
    ("mismatched rows", edit_table(DATA, lambda t: drop_row(t, 6)), [], DATA, ": episode 1: 4 rows but meta/episodes says 'length' 5"),
    (
        "unknown task",
        lambda root: None,
        ["reach-v3=reach the moon"],
        "meta/tasks.parquet",
        ": no task 'reach the moon' (tasks: reach-v3, push-v3)",
    ),
    (
        "task not in the suite",
        lambda root: set_task_strings(root, ["reach-v3", "fold the laundry"]),
        [],
        "meta/tasks.parquet",
        ": task 'fold the laundry': 'fold the laundry' is not a task of metaworld mt10",
    ),
    ("NaN", edit_table(DATA, nan_action), [], DATA, ": episode 0: column 'action': holds NaN or inf"),
    (
        "short video",
        lambda root: _truncate_video(root, 22),
        [],
        "videos/observation.images.corner/chunk-000/file-000.mp4",
        ": 2 frames from 0.2500 s, but episode 4 has 'length' 6",
    ),
]


def _truncate_video(root, keep):
    """Re-encode the camera video with only its first `keep` frames."""
    path = root / "videos/observation.images.corner/chunk-000/file-000.mp4"
    shutil.copy(path, root / "full.mp4")
    reader = imageio_ffmpeg.read_frames(str(root / "full.mp4"))
    meta = next(reader)
    frames = [frame for _, frame in zip(range(keep), reader)]
    reader.close()
    writer = imageio_ffmpeg.write_frames(
        str(path), meta["size"], fps=80, codec="libx264", macro_block_size=1, output_params=["-g", "2", "-bf", "0"]
    )
    writer.send(None)
    for frame in frames:
        writer.send(frame)
    writer.close()
    (root / "full.mp4").unlink()


@pytest.mark.parametrize("what,change,tasks,relative,expected", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_one_line_naming_file_and_key_and_nothing_is_written(tmp_path, capsys, what, change, tasks, relative, expected):
    _, root = export(tmp_path, cameras=what == "short video")
    (root / "rlmtl_export.json").unlink()
    change(root)
    out_folder = tmp_path / "out"
    out_folder.mkdir()
    capsys.readouterr()
    args = [
        "import",
        "--format",
        "lerobot",
        str(root),
        str(out_folder / "d.h5"),
        *(a for t in tasks for a in ("--task", t)),
        "--no-progress",
    ]
    assert main(args) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"rlmtl import: error: {root / relative}{expected}"), lines[0]
    assert files_under(out_folder) == []


def test_not_a_v30_dataset(tmp_path, capsys):
    _, root = export(tmp_path, cameras=False)
    edit_info(lambda info: info.__setitem__("codebase_version", "v2.1"))(root)
    assert main(["import", "--format", "lerobot", str(root), str(tmp_path / "d.h5"), "--no-progress"]) == 2
    assert f"{root / 'meta/info.json'}: codebase_version v2.1 is not v3.0" in capsys.readouterr().err


def test_an_export_never_overwrites_what_rlmtl_did_not_write(tmp_path, capsys):
    source = make_dataset(tmp_path / "src.h5")
    theirs = tmp_path / "theirs"
    (theirs / "meta").mkdir(parents=True)
    (theirs / "meta/info.json").write_text("{}")
    assert main(["export", "--format", "lerobot", str(source), str(theirs), "--no-progress"]) == 4
    assert "not overwriting it" in capsys.readouterr().err
    assert files_under(theirs) == ["meta", "meta/info.json"]
    assert main(["export", "--format", "lerobot", str(source), str(tmp_path / "mine"), "--no-progress"]) == 0
    assert main(["export", "--format", "lerobot", str(source), str(tmp_path / "mine"), "--fps", "20", "--no-progress"]) == 0
    assert json.loads((tmp_path / "mine/meta/info.json").read_text())["fps"] == 20
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name] == []
    assert main(["export", "--format", "lerobot", str(source), str(tmp_path / "x"), "--per-task-files", "--no-progress"]) == 2
    assert "--per-task-files applies to --format robomimic" in capsys.readouterr().err
