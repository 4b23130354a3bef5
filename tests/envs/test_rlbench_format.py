"""RLBench's on-disk format read without RLBench: restricted unpickler, depth and mask decoding, episodes."""

from __future__ import annotations

import io
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from rlbench_fixtures import FAR, NEAR, depth_frame, frame, make_demo, rlbench_pickle, write_rlbench_dataset

from rlmtl.envs.rlbench_format import (
    DEPTH_SCALE,
    RestrictedUnpickler,
    UnsafePickleError,
    decode_depth,
    decode_mask,
    depth_to_metres,
    encode_depth,
    find_episodes,
    load_demo,
    load_pickle,
    read_descriptions,
    read_episode,
)
from rlmtl.errors import DatasetError


def _load(data: bytes):
    return RestrictedUnpickler(io.BytesIO(data), "test.pkl").load()


@pytest.mark.parametrize("numpy_layout,protocol", [(1, 2), (1, 4), (2, 2), (2, 4), (2, 5)])
def test_loads_rlbench_demo_pickles_of_both_numpy_layouts(numpy_layout, protocol, tmp_path):
    demo = make_demo(variation=2, seed=7, peract=True)
    data = rlbench_pickle(demo, protocol, numpy_layout)
    assert b"rlbench.demo" in data and b"rlbench.backend.observation" in data
    if numpy_layout == 1:
        assert b"numpy.core.multiarray" in data and b"numpy._core" not in data
    else:
        assert b"numpy._core" in data
    path = tmp_path / "low_dim_obs.pkl"
    path.write_bytes(data)
    loaded = load_demo(path)
    assert len(loaded) == len(demo)
    for original, plain in zip(demo._observations, loaded.observations):
        assert isinstance(plain, dict)
        np.testing.assert_array_equal(plain["gripper_pose"], original.gripper_pose)
        np.testing.assert_array_equal(plain["joint_velocities"], original.joint_velocities)
        assert plain["gripper_open"] == original.gripper_open
        assert plain["front_rgb"] is None
        assert plain["misc"]["front_camera_far"] == FAR and plain["misc"]["variation_index"] == 2
        np.testing.assert_array_equal(plain["ignore_collisions"], [1.0])  # the PerAct fork's extra attribute
    name, keys, position, has_gauss, cached = loaded.random_seed
    assert name == "MT19937" and keys.dtype == np.uint32 and keys.shape == (624,)
    np.testing.assert_array_equal(keys, demo.random_seed[1])
    assert loaded.num_reset_attempts == 1


def test_loading_does_not_import_rlbench(tmp_path):
    path = tmp_path / "low_dim_obs.pkl"
    path.write_bytes(rlbench_pickle(make_demo(0, 1)))
    load_demo(path)
    assert "rlbench" not in sys.modules and "rlbench.demo" not in sys.modules


class _RunsCommand:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_refuses_other_globals_without_executing_them(protocol, tmp_path):
    marker = tmp_path / "pwned"
    demo = make_demo(0, 1)
    demo._observations[3].misc["payload"] = _RunsCommand(f"touch {marker}")
    data = rlbench_pickle(demo, protocol)
    path = tmp_path / "low_dim_obs.pkl"
    path.write_bytes(data)
    with pytest.raises(UnsafePickleError, match=r"refuses to load global (os|posix)\.system") as error:
        load_demo(path)
    assert str(path) in str(error.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        (eval, ("1+1",)),
        (getattr, ("text", "upper")),
        (pickle.loads, (b"",)),
    ],
)
def test_refuses_builtins_and_other_callables(payload):
    class Sneaky:
        def __reduce__(self):
            return payload

    with pytest.raises(UnsafePickleError, match="refuses to load global"):
        _load(pickle.dumps([np.zeros(3), Sneaky()], protocol=4))


def test_refuses_array_subclasses_and_object_arrays():
    with pytest.raises(UnsafePickleError):
        _load(pickle.dumps(np.rec.array([(1, 2.0)], dtype=[("a", "i4"), ("b", "f8")])))
    # an object array would carry arbitrary objects; plain numbers inside are still refused at find_class or load
    objects = np.array([os.system], dtype=object)
    with pytest.raises(UnsafePickleError):
        _load(pickle.dumps(objects))


def test_corrupt_or_missing_pickle_names_the_file(tmp_path):
    path = tmp_path / "low_dim_obs.pkl"
    path.write_bytes(rlbench_pickle(make_demo(0, 1))[:100])
    with pytest.raises(DatasetError, match="low_dim_obs.pkl: not a readable pickle"):
        load_pickle(path)
    with pytest.raises(DatasetError, match="missing.pkl: file not found"):
        load_pickle(tmp_path / "missing.pkl")
    path.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(DatasetError, match="not an RLBench Demo"):
        load_demo(path)


def test_depth_decoding_matches_the_formula_on_known_values():
    pixels = np.array([[[0, 0, 0], [255, 255, 255], [1, 0, 0], [0, 1, 0], [0, 0, 1], [128, 0, 0], [18, 52, 86]]], dtype=np.uint8)
    decoded = decode_depth(pixels)[0].astype(np.float64)
    expected = np.array([0, DEPTH_SCALE, 65536, 256, 1, 128 * 65536, 18 * 65536 + 52 * 256 + 86]) / (2**24 - 1)
    np.testing.assert_allclose(decoded, expected, rtol=1e-6)
    assert decoded[1] == 1.0
    metres = depth_to_metres(decode_depth(pixels), near=0.5, far=4.5)[0]
    np.testing.assert_allclose(metres, 0.5 + expected * 4.0, rtol=1e-6)
    assert metres[0] == pytest.approx(0.5) and metres[1] == pytest.approx(4.5)
    # the writer's rounding: d = 0.5 -> floor(0.5 * (2^24 - 1) + 0.5) = 2^23 -> bytes (128, 0, 0)
    np.testing.assert_array_equal(encode_depth(np.array([[0.5, 0.0, 1.0]])), [[[128, 0, 0], [0, 0, 0], [255, 255, 255]]])


def test_depth_round_trip_is_exact_to_one_step():
    depth = np.random.default_rng(0).random((32, 32))
    decoded = decode_depth(encode_depth(depth)).astype(np.float64)
    assert np.max(np.abs(decoded - depth)) <= 0.5 / DEPTH_SCALE + 1e-7


def test_mask_decoding():
    mask = np.array([[[1, 2, 3], [255, 0, 0]]], dtype=np.uint8)
    np.testing.assert_array_equal(decode_mask(mask), [[1 + 2 * 256 + 3 * 65536, 255]])


@pytest.mark.parametrize("layout", ["upstream", "peract"])
def test_find_and_read_episodes_in_both_layouts(layout, tmp_path):
    write_rlbench_dataset(tmp_path, "reach_target", layout, {0: 2, 1: 1}, cameras=("front", "wrist"), size=8)
    refs = find_episodes(tmp_path, "reach_target", variation=-1)
    assert len(refs) == 3
    episode = read_episode(refs[-1], ["front"], ("rgb", "depth", "mask"))
    assert episode.variation == 1 and len(episode) == 16
    assert set(episode.images) == {"front_rgb", "front_depth", "front_mask"}
    number = refs[-1].number
    np.testing.assert_array_equal(episode.images["front_rgb"][5], frame("front", 5, number, 8))
    np.testing.assert_allclose(episode.images["front_depth"][3], NEAR + depth_frame(3, 8) * (FAR - NEAR), atol=1e-5)
    np.testing.assert_array_equal(episode.images["front_mask"][2], np.full((8, 8), 82))
    assert read_descriptions(refs[0]) == ["do variation 0", "variation 0 please"]
    if layout == "upstream":
        assert [r.variation for r in find_episodes(tmp_path, "reach_target", variation=0)] == [0, 0]


def test_only_requested_cameras_are_read_and_missing_files_are_named(tmp_path):
    write_rlbench_dataset(tmp_path, "push_button", "upstream", {0: 1}, cameras=("front",), size=8)
    (ref,) = find_episodes(tmp_path, "push_button")
    assert set(read_episode(ref, ["front"]).images) == {"front_rgb"}  # wrist/shoulders absent on disk: fine
    with pytest.raises(DatasetError, match=r"wrist_rgb: missing image folder"):
        read_episode(ref, ["wrist"])
    (ref.path / "front_rgb" / "7.png").unlink()
    with pytest.raises(DatasetError, match=r"front_rgb: 15 frames but low_dim_obs.pkl has 16 steps \(missing 7.png\)"):
        read_episode(ref, ["front"])
    with pytest.raises(DatasetError, match="no such task folder"):
        find_episodes(tmp_path, "stack_wine")
    with pytest.raises(DatasetError, match="unknown RLBench camera"):
        read_episode(ref, ["side"])


def test_depth_without_near_far_is_reported(tmp_path):
    demo = make_demo(0, 1)
    for observation in demo._observations:
        del observation.misc["front_camera_near"]
    write_rlbench_dataset(tmp_path, "stack_wine", "upstream", {0: 1}, cameras=("front",), size=8)
    (ref,) = find_episodes(tmp_path, "stack_wine")
    (ref.path / "low_dim_obs.pkl").write_bytes(rlbench_pickle(demo))
    with pytest.raises(DatasetError, match=r"low_dim_obs.pkl: step 0 has no misc\['front_camera_near'\]"):
        read_episode(ref, ["front"], ("depth",))
    assert Path(ref.path / "low_dim_obs.pkl").is_file()
