import h5py
import pytest
import numpy as np

from rlmtl.config import load_config
from rlmtl.data.collect import collect
from rlmtl.data.dataset import load_dataset, read_attrs
from rlmtl.envs import scene_seed
from rlmtl.errors import ConfigError


def test_collect_writes_only_successful_demos_and_reuses(tiny_config_file, tmp_path):
    config = load_config(tiny_config_file(env={"tasks": ["drawer-close-v3"]}, data={"demos_per_task": 2}))
    path = collect(config, progress=False)
    attrs = read_attrs(path)
    assert attrs["backend"] == "metaworld" and attrs["tasks"] == ["drawer-close-v3"]
    assert attrs["observation_spec"]["state"]["shape"] == [39]
    with h5py.File(path) as handle:
        group = handle["data/drawer-close-v3"]
        assert group.attrs["num_demos"] == 2
        # every successful expert attempt is counted, the ones beyond the request too (drawer-close's
        # expert always succeeds: the first round's 2 + 10% = 3 attempts all succeed)
        assert group.attrs["attempts"] == 3 and group.attrs["successes"] == 3
        for name in ("demo_0", "demo_1"):
            demo = group[name]
            assert demo["success"][-1] and not demo["success"][:-1].any()  # stopped at first success
            assert demo["obs/state"].shape[0] == demo["actions"].shape[0]
            assert np.abs(demo["actions"][:]).max() <= 1.0
        assert group["demo_0"].attrs["scene_seed"] == scene_seed("train", 0, 5, group["demo_0"].attrs["attempt"])
    stamp = path.stat().st_mtime_ns
    assert collect(config, progress=False) == path and path.stat().st_mtime_ns == stamp  # reused
    assert collect(config, force=True, progress=False) == path and path.stat().st_mtime_ns != stamp


def test_collection_does_not_depend_on_worker_count(tiny_config_file, tmp_path):
    one = load_config(
        tiny_config_file(env={"tasks": ["reach-v3"]}, data={"demos_per_task": 2, "workers": 1, "cache_dir": str(tmp_path / "w1")})
    )
    two = load_config(
        tiny_config_file(env={"tasks": ["reach-v3"]}, data={"demos_per_task": 2, "workers": 2, "cache_dir": str(tmp_path / "w2")})
    )
    a = load_dataset(collect(one, progress=False), ["reach-v3"], ["state"]).per_task[0]
    b = load_dataset(collect(two, progress=False), ["reach-v3"], ["state"]).per_task[0]
    np.testing.assert_array_equal(a.actions, b.actions)
    np.testing.assert_array_equal(a.observations["state"], b.observations["state"])


def test_collect_images(tiny_config_file):
    config = load_config(tiny_config_file(env={"tasks": ["reach-v3"], "cameras": ["corner"], "image_size": 32}, data={"demos_per_task": 1}))
    data = load_dataset(collect(config, progress=False), ["reach-v3"], ["state", "rgb_corner"])
    images = data.per_task[0].observations["rgb_corner"]
    assert images.dtype == np.uint8 and images.shape[1:] == (32, 32, 3) and images.std() > 10


def test_demos_go_on_after_success_in_a_dataset_of_their_own(tiny_config_file, tmp_path):
    base = {"demos_per_task": 1, "workers": 1}
    stop = load_config(tiny_config_file(env={"tasks": ["reach-v3"]}, data=base))
    held = load_config(tiny_config_file(env={"tasks": ["reach-v3"]}, data={**base, "steps_after_success": 7}))
    stop_path, held_path = collect(stop, progress=False), collect(held, progress=False)
    assert stop_path != held_path and read_attrs(held_path)["steps_after_success"] == 7
    assert "steps_after_success" not in read_attrs(stop_path)
    short = load_dataset(stop_path, ["reach-v3"], ["state"]).per_task[0]
    long = load_dataset(held_path, ["reach-v3"], ["state"]).per_task[0]
    assert len(long.actions) == len(short.actions) + 7  # the same scene: the same steps up to the success, then 7 more
    np.testing.assert_array_equal(long.actions[: len(short.actions)], short.actions)


def test_steps_after_success_needs_a_scripted_expert(tiny_config_file, tmp_path):
    config = load_config(
        tiny_config_file(env={"backend": "rlbench", "suite": "rlbench10", "tasks": []}, data={"steps_after_success": 5}),
    )
    with pytest.raises(ConfigError, match=r"^data\.steps_after_success: suite 'rlbench10' .* got 5$"):
        collect(config, progress=False)
    assert not list(tmp_path.rglob("*.h5"))
