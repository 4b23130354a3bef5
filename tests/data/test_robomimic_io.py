"""`rlmtl export/import --format robomimic`: round trips, the file layout robomimic's SequenceDataset
reads (robomimic 0.3.0 robomimic/utils/dataset.py), foreign files, and bad input."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from interchange_fixtures import TASKS, dataset_content, files_under, make_dataset

from rlmtl.cli import main
from rlmtl.data.dataset import read_attrs


def assert_same_content(a, b):
    content_a, content_b = dataset_content(a), dataset_content(b)
    assert list(content_a) == list(content_b)
    for task in content_a:
        assert len(content_a[task]) == len(content_b[task])
        for demo_a, demo_b in zip(content_a[task], content_b[task]):
            assert set(demo_a) == set(demo_b)
            for key in demo_a:
                np.testing.assert_array_equal(demo_a[key], demo_b[key], err_msg=f"{task} {key}")
                assert demo_a[key].dtype == demo_b[key].dtype, key


def attrs_without_import(path):
    attrs = read_attrs(path)
    imported = attrs.pop("imported_from")
    return attrs, imported


@pytest.mark.parametrize("cameras", [False, True])
def test_round_trip_through_one_file(tmp_path, cameras, capsys):
    source = make_dataset(tmp_path / "src.h5", cameras=cameras)
    assert main(["export", "--format", "robomimic", str(source), str(tmp_path / "x.hdf5"), "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "x.hdf5")
    assert main(["import", "--format", "robomimic", str(tmp_path / "x.hdf5"), str(tmp_path / "back.h5"), "--no-progress"]) == 0
    assert_same_content(source, tmp_path / "back.h5")
    attrs, imported = attrs_without_import(tmp_path / "back.h5")
    assert attrs == read_attrs(source)  # backend, suite, tasks, specs, seeds, fingerprint: all carried
    assert imported == {"format": "robomimic", "sources": [str((tmp_path / "x.hdf5").resolve())], "exported_by_rlmtl": True}


def test_round_trip_through_one_file_per_task(tmp_path):
    source = make_dataset(tmp_path / "src.h5", cameras=True)
    out = tmp_path / "per_task"
    assert main(["export", "--format", "robomimic", str(source), str(out), "--per-task-files", "--no-progress"]) == 0
    assert files_under(out) == ["push-v3.hdf5", "reach-v3.hdf5", "rlmtl_export.json"]
    files = [str(out / f"{task}.hdf5") for task in TASKS]
    assert main(["import", "--format", "robomimic", *files, str(tmp_path / "back.h5"), "--no-progress"]) == 0
    assert_same_content(source, tmp_path / "back.h5")
    # the same files with their tasks named (as for files from elsewhere), in another order
    args = ["import", "--format", "robomimic", files[1], files[0], str(tmp_path / "swapped.h5"), "--task", "push-v3", "--task", "reach-v3"]
    assert main([*args, "--no-progress"]) == 0
    assert read_attrs(tmp_path / "swapped.h5")["tasks"] == ["push-v3", "reach-v3"]


def test_a_subset_of_tasks_by_filter_key(tmp_path):
    source = make_dataset(tmp_path / "src.h5")
    assert main(["export", "--format", "robomimic", str(source), str(tmp_path / "x.hdf5"), "--no-progress"]) == 0
    assert (
        main(["import", "--format", "robomimic", str(tmp_path / "x.hdf5"), str(tmp_path / "push.h5"), "--task", "push-v3", "--no-progress"])
        == 0
    )
    assert read_attrs(tmp_path / "push.h5")["tasks"] == ["push-v3"]
    assert (
        dataset_content(tmp_path / "push.h5")["push-v3"][0]["actions"].tolist() == dataset_content(source)["push-v3"][0]["actions"].tolist()
    )


def test_the_file_has_the_layout_robomimic_reads(tmp_path):
    """Checked against robomimic's source (0.3.0 dataset.py:170-188; 0.5.0 dataset.py:199-221; docs/datasets/overview.md)."""
    source = make_dataset(tmp_path / "src.h5", cameras=True)
    out = tmp_path / "x.hdf5"
    assert main(["export", "--format", "robomimic", str(source), str(out), "--no-progress"]) == 0
    content = dataset_content(source)
    with h5py.File(out, "r") as handle:
        names = list(handle["data"])
        assert all(name.startswith("demo_") for name in names)  # no task level under data/
        order = [names[i] for i in np.argsort([int(name[5:]) for name in names])]  # robomimic's sort (dataset.py:175)
        assert order == [f"demo_{i}" for i in range(6)]
        total = sum(handle[f"data/{name}"].attrs["num_samples"] for name in names)
        assert handle["data"].attrs["total"] == total == sum(len(d["actions"]) for t in TASKS for d in content[t])
        env_args = json.loads(handle["data"].attrs["env_args"])
        assert set(env_args) == {"env_name", "type", "env_kwargs"} and env_args["type"] == 2
        # filter keys: bytes demo names, as file_utils.create_hdf5_filter_key writes them
        assert handle["mask/reach-v3"].dtype.kind == "S"
        assert [n.decode() for n in handle["mask/reach-v3"][:]] == ["demo_0", "demo_1", "demo_2"]
        assert [n.decode() for n in handle["mask/push-v3"][:]] == ["demo_3", "demo_4", "demo_5"]
        demo = handle["data/demo_4"]
        expected = content["push-v3"][1]
        length = demo.attrs["num_samples"]
        assert demo["actions"].shape == (length, 4) and demo["rewards"].shape == (length,) and demo["dones"].shape == (length,)
        np.testing.assert_array_equal(demo["dones"][:], np.arange(length) == length - 1)
        np.testing.assert_array_equal(demo["obs/state"][:], expected["obs/state"])
        np.testing.assert_array_equal(demo["next_obs/state"][:-1], expected["obs/state"][1:])
        np.testing.assert_array_equal(demo["next_obs/state"][-1], expected["obs/state"][-1])
        assert demo["obs/rgb_corner"].dtype == np.uint8 and demo["obs/rgb_corner"].shape[1:] == (16, 16, 3)  # channel-last uint8
        assert demo.attrs["rlmtl_task"] == "push-v3"
        np.testing.assert_allclose(
            handle["rlmtl/stats/push-v3/actions/mean"][:], np.concatenate([d["actions"] for d in content["push-v3"]]).mean(0), rtol=1e-5
        )


def write_foreign(path, demos=2, mask=None, image_key="agentview_image", **changes):
    """A robomimic file as robomimic's own tools write it (no rlmtl metadata)."""
    rng = np.random.default_rng(3)
    with h5py.File(path, "w") as handle:
        data = handle.create_group("data")
        total = 0
        for i in range(demos):
            length = 5 + i
            demo = data.create_group(f"demo_{i}")
            demo.attrs["num_samples"] = length
            demo["actions"] = rng.uniform(-1, 1, (length, 4))
            demo["rewards"] = np.arange(length, dtype=np.float64)
            demo["dones"] = (np.arange(length) == length - 1).astype(np.int64)
            demo["states"] = rng.normal(size=(length, 9))
            demo["obs/object"] = rng.normal(size=(length, 39))
            demo["obs/robot0_gripper_qpos"] = rng.normal(size=(length,))
            demo[f"obs/{image_key}"] = rng.integers(0, 255, (length, 8, 8, 3), dtype=np.uint8)
            demo["obs/depth"] = rng.normal(size=(length, 8, 8, 1)).astype(np.float32)
            demo["next_obs/object"] = rng.normal(size=(length, 39))
            total += length
        data.attrs["total"] = total
        data.attrs["env_args"] = json.dumps({"env_name": "Lift", "type": 1, "env_kwargs": {}})
        for key, names in (mask or {}).items():
            handle[f"mask/{key}"] = np.array(names, dtype="S")
        for where, change in changes.items():
            change(handle, where)


def test_a_foreign_file_with_filter_keys(tmp_path, capsys):
    path = tmp_path / "lift.hdf5"
    write_foreign(path, demos=3, mask={"easy": ["demo_0", "demo_2"], "hard": ["demo_1"]})
    out = tmp_path / "lift.h5"
    args = ["import", "--format", "robomimic", str(path), str(out), "--task", "reach-v3=easy", "--task", "push-v3=hard", "--no-progress"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert f"{path}:/data/demo_0/obs/depth: shape (5, 8, 8, 1) (float32) is neither a vector nor an H x W x 3 uint8 image; skipped" in err
    attrs = read_attrs(out)
    assert attrs["tasks"] == ["reach-v3", "push-v3"] and attrs["backend"] == "metaworld" and attrs["suite"] == "mt10"
    assert attrs["observation_spec"]["rgb_agentview"]["shape"] == [8, 8, 3]
    assert attrs["observation_spec"]["robot0_gripper_qpos"]["shape"] == [1]
    content = dataset_content(out)
    assert [len(d["actions"]) for d in content["reach-v3"]] == [5, 7] and [len(d["actions"]) for d in content["push-v3"]] == [6]
    with h5py.File(path, "r") as handle:
        np.testing.assert_array_equal(content["reach-v3"][1]["obs/rgb_agentview"], handle["data/demo_2/obs/agentview_image"][:])
        np.testing.assert_allclose(content["push-v3"][0]["obs/object"], handle["data/demo_1/obs/object"][:], rtol=1e-6)
        np.testing.assert_array_equal(content["push-v3"][0]["success"], handle["data/demo_1/dones"][:] != 0)
    assert content["reach-v3"][0]["actions"].dtype == np.float32


def test_a_foreign_file_per_task(tmp_path):
    write_foreign(tmp_path / "a.hdf5")
    write_foreign(tmp_path / "b.hdf5", demos=1)
    out = tmp_path / "two.h5"
    args = [
        "import",
        "--format",
        "robomimic",
        str(tmp_path / "a.hdf5"),
        str(tmp_path / "b.hdf5"),
        str(out),
        "--task",
        "reach-v3",
        "--task",
        "push-v3",
    ]
    assert main([*args, "--no-progress"]) == 0
    assert [len(v) for v in dataset_content(out).values()] == [2, 1]


def del_key(key):
    return lambda handle, _: handle.__delitem__(key)


def replace_key(key, values):
    def change(handle, _):
        del handle[key]
        handle[key] = values

    return change


BAD_INPUTS = [
    # (what, file changes, --task arguments, the expected line after "error: <file>")
    ("missing key", {"x": del_key("data/demo_1/rewards")}, ["reach-v3"], ":/data/demo_1/rewards: missing"),
    (
        "missing obs key",
        {"x": del_key("data/demo_1/obs/object")},
        ["reach-v3"],
        ":/data/demo_1/obs/object: missing (earlier demos have it)",
    ),
    (
        "mismatched length",
        {"x": replace_key("data/demo_0/obs/object", np.zeros((4, 39)))},
        ["reach-v3"],
        ":/data/demo_0/obs/object: shape (4, 39) does not match the 5 steps of actions",
    ),
    (
        "num_samples disagrees",
        {"x": lambda handle, _: handle["data/demo_1"].attrs.__setitem__("num_samples", 9)},
        ["reach-v3"],
        ":/data/demo_1: attribute num_samples is 9 but actions has 6 steps",
    ),
    (
        "unknown task",
        {},
        ["open-the-pod-bay-doors"],
        " (--task open-the-pod-bay-doors): 'open-the-pod-bay-doors' is not a task of metaworld mt10",
    ),
    (
        "unknown filter key",
        {"x": lambda h, _: h.__setitem__("mask/easy", np.array([b"demo_0"]))},
        ["reach-v3=hard"],
        ":/mask/hard: no such filter key",
    ),
    (
        "mask names a missing demo",
        {"x": lambda h, _: h.__setitem__("mask/easy", np.array([b"demo_7"]))},
        ["reach-v3=easy"],
        ":/mask/easy: names 'demo_7', which is not in /data",
    ),
    ("NaN", {"x": replace_key("data/demo_1/actions", np.full((6, 4), np.nan))}, ["reach-v3"], ":/data/demo_1/actions: holds NaN or inf"),
    (
        "declared size not stored",
        {
            "x": lambda h, _: (
                h.__delitem__("data/demo_1/obs/object"),
                h.create_dataset("data/demo_1/obs/object", shape=(6, 1 << 20), dtype="f8", chunks=(1, 1024)),
            )
        },
        ["reach-v3"],
        ":/data/demo_1/obs/object: declares 50331648 bytes but stores 0",
    ),
]


@pytest.mark.parametrize("what,changes,tasks,expected", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_is_one_line_naming_file_and_key_and_nothing_is_written(tmp_path, capsys, what, changes, tasks, expected):
    path = tmp_path / "src.hdf5"
    write_foreign(path, **changes)
    out_folder = tmp_path / "out"
    out_folder.mkdir()
    args = [
        "import",
        "--format",
        "robomimic",
        str(path),
        str(out_folder / "d.h5"),
        *(a for t in tasks for a in ("--task", t)),
        "--no-progress",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "warning" not in line]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"rlmtl import: error: {path}{expected}"), lines[0]
    assert files_under(out_folder) == []


def test_no_task_names_for_a_foreign_file(tmp_path, capsys):
    write_foreign(tmp_path / "a.hdf5", mask={"easy": ["demo_0"]})
    assert main(["import", "--format", "robomimic", str(tmp_path / "a.hdf5"), str(tmp_path / "d.h5"), "--no-progress"]) == 2
    assert (
        f"{tmp_path / 'a.hdf5'}: a robomimic file names no tasks (filter keys: easy): give --task TASK[=FILTER_KEY]"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "d.h5").exists()


def test_an_export_never_overwrites_what_rlmtl_did_not_write(tmp_path, capsys):
    source = make_dataset(tmp_path / "src.h5")
    foreign = tmp_path / "theirs.hdf5"
    write_foreign(foreign)
    before = foreign.read_bytes()
    assert main(["export", "--format", "robomimic", str(source), str(foreign), "--no-progress"]) == 4
    assert "is not an file `rlmtl export` wrote; not overwriting it" in capsys.readouterr().err
    assert foreign.read_bytes() == before
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    assert main(["export", "--format", "robomimic", str(source), str(folder), "--per-task-files", "--no-progress"]) == 4
    assert files_under(folder) == ["notes.txt"]
    # an export of rlmtl's own is replaced
    out = tmp_path / "x.hdf5"
    assert main(["export", "--format", "robomimic", str(source), str(out), "--no-progress"]) == 0
    assert main(["export", "--format", "robomimic", str(source), str(out), "--no-progress"]) == 0
    assert main(["export", "--format", "robomimic", str(source), str(tmp_path / "pt"), "--per-task-files", "--no-progress"]) == 0
    assert main(["export", "--format", "robomimic", str(source), str(tmp_path / "pt"), "--per-task-files", "--no-progress"]) == 0
    assert files_under(tmp_path / "pt") == ["push-v3.hdf5", "reach-v3.hdf5", "rlmtl_export.json"]
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name] == []
    # an import never writes over a file that is not an rlmtl dataset
    assert main(["import", "--format", "robomimic", str(out), str(foreign), "--no-progress"]) == 4
    assert foreign.read_bytes() == before


def test_collect_uses_an_imported_dataset_instead_of_collecting(tmp_path, tiny_config_file, capsys):
    from rlmtl.config import load_config
    from rlmtl.data.collect import collect

    source = make_dataset(tmp_path / "src.h5", tasks=["reach-v3", "drawer-close-v3"])
    assert main(["export", "--format", "robomimic", str(source), str(tmp_path / "x.hdf5"), "--no-progress"]) == 0
    imported = tmp_path / "imported.h5"
    assert main(["import", "--format", "robomimic", str(tmp_path / "x.hdf5"), str(imported), "--no-progress"]) == 0
    before = imported.read_bytes()
    config = load_config(tiny_config_file(), [f"data.path={imported}"])
    capsys.readouterr()
    assert collect(config, progress=False) == imported
    assert f"rlmtl collect: using {imported}, imported from robomimic" in capsys.readouterr().err
    assert imported.read_bytes() == before
