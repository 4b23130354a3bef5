"""What `rlmtl export` writes, read by the formats' own dataset classes: robomimic's SequenceDataset
(robomimic 0.3.0) and lerobot's LeRobotDataset (lerobot 0.4.4, dataset v3.0, offline from a local root).

They run in the reader environment `scripts/setup_io_readers.sh` makes (.venv-io, or the Python named by
RLMTL_IO_PYTHON), through tests/helpers/external_readers.py, because lerobot needs torch<2.11 beside
rlmtl's torch. Without it these tests skip, unless RLMTL_REQUIRE_IO_READERS=1 (CI sets it), where
they fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from interchange_fixtures import TASKS, dataset_content, make_dataset

from rlmtl.cli import main

pytestmark = pytest.mark.io_readers

ROOT = Path(__file__).resolve().parents[2]
READER = ROOT / "tests" / "helpers" / "external_readers.py"
IMAGE_TOLERANCE = 4.0  # the camera after H.264, as in test_lerobot_io.py


def reader_python() -> str:
    python = os.environ.get("RLMTL_IO_PYTHON") or str(ROOT / ".venv-io" / "bin" / "python")
    if not Path(python).exists():
        message = f"no reader environment at {python}: run scripts/setup_io_readers.sh"
        if os.environ.get("RLMTL_REQUIRE_IO_READERS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return python


def read_with(kind: str, source: Path, out: Path, *extra: str) -> dict[str, np.ndarray]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(out.parent / "hf_home"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [reader_python(), str(READER), kind, str(source), str(out), *extra], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    with np.load(out) as arrays:
        return dict(arrays)


def flat(content, key, tasks=TASKS):
    return np.concatenate([demo[key] for task in tasks for demo in content[task]])


def test_robomimic_sequence_dataset_reads_the_export(tmp_path):
    source = make_dataset(tmp_path / "src.h5", cameras=True)
    out = tmp_path / "x.hdf5"
    assert main(["export", "--format", "robomimic", str(source), str(out), "--no-progress"]) == 0
    content = dataset_content(source)
    read = read_with("robomimic", out, tmp_path / "all.npz")
    assert list(read["demos"]) == [f"demo_{i}" for i in range(6)]
    for key in ("obs/state", "obs/proprio", "obs/rgb_corner", "actions", "rewards"):
        np.testing.assert_array_equal(read[key], flat(content, key), err_msg=key)
    np.testing.assert_array_equal(read["dones"] != 0, flat(content, "success"))
    np.testing.assert_array_equal(read["next_obs/state"][:3], flat(content, "obs/state")[1:4])
    push = read_with("robomimic", out, tmp_path / "push.npz", "push-v3")  # the task's filter key
    np.testing.assert_array_equal(push["actions"], flat(content, "actions", ["push-v3"]))
    assert main(["export", "--format", "robomimic", str(source), str(tmp_path / "per_task"), "--per-task-files", "--no-progress"]) == 0
    reach = read_with("robomimic", tmp_path / "per_task" / "reach-v3.hdf5", tmp_path / "reach.npz")
    np.testing.assert_array_equal(reach["obs/proprio"], flat(content, "obs/proprio", ["reach-v3"]))


def test_lerobot_dataset_reads_the_export(tmp_path):
    source = make_dataset(tmp_path / "src.h5", cameras=True)
    out = tmp_path / "lr"
    assert main(["export", "--format", "lerobot", str(source), str(out), "--no-progress"]) == 0
    content = dataset_content(source)
    read = read_with("lerobot", out, tmp_path / "lr.npz")
    meta = json.loads(str(read["meta"]))
    frames = len(flat(content, "actions"))
    assert meta["num_episodes"] == 6 and meta["num_frames"] == frames and meta["fps"] == 80
    assert meta["video_keys"] == ["observation.images.corner"] and meta["video_backend"] == "torchcodec"
    np.testing.assert_array_equal(read["observation.state"], flat(content, "obs/proprio"))
    np.testing.assert_array_equal(read["observation.environment_state"], flat(content, "obs/state"))
    np.testing.assert_array_equal(read["action"], flat(content, "actions"))
    np.testing.assert_array_equal(read["next.reward"], flat(content, "rewards"))
    np.testing.assert_array_equal(read["next.success"], flat(content, "success"))
    assert list(read["task"]) == [task for task in TASKS for demo in content[task] for _ in demo["actions"]]
    images = read["observation.images.corner"]  # [N, 3, H, W] float in [0, 1], decoded by torchcodec at each frame's timestamp
    assert images.shape == (frames, 3, 16, 16)
    error = np.abs(images.transpose(0, 2, 3, 1) * 255 - flat(content, "obs/rgb_corner")).mean()
    assert error < IMAGE_TOLERANCE, error
    assert "observation.images.corner" in meta["stats_keys"] and "action" in meta["stats_keys"]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
