import h5py
import numpy as np
import pytest

from rlmtl.data.dataset import Episode, TaskRecord, load_dataset, read_attrs, write_dataset
from rlmtl.errors import DatasetError

SPEC = {"state": {"shape": [3], "dtype": "float32"}, "rgb_cam": {"shape": [4, 4, 3], "dtype": "uint8"}}


def make_episode(rng, length, attempt):
    return Episode(
        observations={
            "state": rng.normal(size=(length, 3)).astype(np.float32),
            "rgb_cam": rng.integers(0, 255, (length, 4, 4, 3), dtype=np.uint8),
        },
        actions=rng.uniform(-1, 1, (length, 2)).astype(np.float32),
        rewards=np.zeros(length, np.float32),
        success=np.arange(length) == length - 1,
        scene_seed=100 + attempt,
        attempt=attempt,
    )


def write_fixture(path, tasks=("a", "b")):
    rng = np.random.default_rng(0)
    records = [TaskRecord(t, i, [make_episode(rng, 5 + j, j) for j in range(3)], 3, 3) for i, t in enumerate(tasks)]
    attrs = {
        "backend": "fake",
        "suite": "s",
        "tasks": list(tasks),
        "observation_spec": SPEC,
        "action_spec": {"shape": [2], "dtype": "float32"},
        "fingerprint": "x",
    }
    write_dataset(path, attrs, records)
    return records


def test_round_trip_and_statistics(tmp_path):
    path = tmp_path / "d.h5"
    records = write_fixture(path)
    attrs = read_attrs(path)
    assert attrs["tasks"] == ["a", "b"] and attrs["observation_spec"] == SPEC
    data = load_dataset(path, ["b", "a"], ["state", "rgb_cam"], action_dim=2)
    assert data.tasks == ["b", "a"]
    b = data.per_task[0]
    expected_actions = np.concatenate([e.actions for e in records[1].episodes])
    np.testing.assert_array_equal(b.actions, expected_actions)
    assert b.observations["rgb_cam"].dtype == np.uint8 and b.observations["rgb_cam"].shape == (18, 4, 4, 3)
    np.testing.assert_allclose(b.stats["actions"]["mean"], expected_actions.mean(0), rtol=1e-5)
    np.testing.assert_allclose(
        b.stats["state"]["std"], np.concatenate([e.observations["state"] for e in records[1].episodes]).std(0), rtol=1e-5
    )
    with h5py.File(path) as handle:
        assert handle["data/a/demo_2"].attrs["scene_seed"] == 102
        assert handle["data/a/demo_0/success"][-1]


def test_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="nope.h5.*not found"):
        read_attrs(tmp_path / "nope.h5")


def test_corrupt_and_truncated_files(tmp_path):
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not an hdf5 file at all" * 100)
    with pytest.raises(DatasetError, match="garbage.h5"):
        read_attrs(garbage)
    good = tmp_path / "good.h5"
    write_fixture(good)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DatasetError, match="truncated.h5"):
        load_dataset(truncated, ["a"], ["state"])


def test_mismatches_name_the_problem(tmp_path):
    path = tmp_path / "d.h5"
    write_fixture(path)
    with pytest.raises(DatasetError, match="no task 'c'"):
        load_dataset(path, ["c"], ["state"])
    with pytest.raises(DatasetError, match="observation key 'depth'"):
        load_dataset(path, ["a"], ["depth"])
    with pytest.raises(DatasetError, match="actions.*action dim 4"):
        load_dataset(path, ["a"], ["state"], action_dim=4)


def test_foreign_hdf5_is_refused(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as handle:
        handle["x"] = np.zeros(3)
    with pytest.raises(DatasetError, match="not an rlmtl dataset"):
        read_attrs(path)


def write_with(path, episodes_a):
    """A two-task dataset whose task "a" holds `episodes_a` (task "b" is normal)."""
    rng = np.random.default_rng(1)
    records = [TaskRecord("a", 0, episodes_a, len(episodes_a), len(episodes_a)), TaskRecord("b", 1, [make_episode(rng, 5, 0)], 1, 1)]
    attrs = {
        "backend": "fake",
        "suite": "s",
        "tasks": ["a", "b"],
        "observation_spec": SPEC,
        "action_spec": {"shape": [2], "dtype": "float32"},
    }
    write_dataset(path, {**attrs, "fingerprint": "x"}, records)


def test_an_empty_demo_is_refused_naming_it(tmp_path):
    rng = np.random.default_rng(0)
    write_with(tmp_path / "d.h5", [make_episode(rng, 5, 0), make_episode(rng, 0, 1)])
    with pytest.raises(DatasetError, match=r"/data/a/demo_1: an empty demo \(0 steps\)"):
        load_dataset(tmp_path / "d.h5", ["a", "b"], ["state"], action_dim=2)


@pytest.mark.parametrize("where", ["actions", "obs/state"])
def test_nan_or_inf_in_a_demo_is_refused_naming_it(tmp_path, where):
    rng = np.random.default_rng(0)
    bad = make_episode(rng, 5, 1)
    (bad.actions if where == "actions" else bad.observations["state"])[2, 1] = np.inf
    write_with(tmp_path / "d.h5", [make_episode(rng, 5, 0), bad])
    with pytest.raises(DatasetError, match=rf"/data/a/demo_1/{where}: holds NaN or inf"):
        load_dataset(tmp_path / "d.h5", ["a", "b"], ["state"], action_dim=2)


def test_an_empty_string_attribute_reads_back_empty(tmp_path):
    # "" used to be taken for JSON ("" is in any string) and refused; imported datasets have fingerprint ""
    rng = np.random.default_rng(0)
    attrs = {"backend": "fake", "suite": "s", "tasks": ["a"], "observation_spec": SPEC, "action_spec": {"shape": [2], "dtype": "float32"}}
    write_dataset(tmp_path / "d.h5", {**attrs, "fingerprint": ""}, [TaskRecord("a", 0, [make_episode(rng, 5, 0)], 1, 1)])
    assert read_attrs(tmp_path / "d.h5")["fingerprint"] == ""
