"""Read an rlmtl export with the format's own dataset class and save what it returned (npz).

Run with the Python of the reader environment (`scripts/setup_io_readers.sh` makes .venv-io with
robomimic and lerobot); it does not import rlmtl:

    .venv-io/bin/python tests/helpers/external_readers.py robomimic FILE.hdf5 OUT.npz [FILTER_KEY]
    .venv-io/bin/python tests/helpers/external_readers.py lerobot DATASET_ROOT OUT.npz

robomimic: `robomimic.utils.dataset.SequenceDataset` over every sample (or those of FILTER_KEY),
with the observation keys the file has and dataset keys actions, rewards, dones.
lerobot: `lerobot.datasets.lerobot_dataset.LeRobotDataset(repo_id, root=...)` over every frame,
offline (HF_HUB_OFFLINE=1), cameras decoded by its default video backend.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np


def read_robomimic(path: str, out: str, filter_key: str | None) -> None:
    import h5py
    from robomimic.utils.dataset import SequenceDataset

    with h5py.File(path, "r") as handle:
        first = sorted(handle["data"], key=lambda name: int(name[5:]))[0]
        obs_keys = sorted(handle[f"data/{first}/obs"])
    dataset = SequenceDataset(
        hdf5_path=path,
        obs_keys=obs_keys,
        dataset_keys=("actions", "rewards", "dones"),
        hdf5_cache_mode=None,
        filter_by_attribute=filter_key,
    )
    items = [dataset[i] for i in range(len(dataset))]
    arrays = {f"obs/{key}": np.stack([item["obs"][key][0] for item in items]) for key in obs_keys}
    arrays.update({f"next_obs/{key}": np.stack([item["next_obs"][key][0] for item in items]) for key in obs_keys})
    for key in ("actions", "rewards", "dones"):
        arrays[key] = np.stack([np.asarray(item[key][0]) for item in items])
    arrays["demos"] = np.array(dataset.demos)
    np.savez(out, **arrays)


def read_lerobot(root: str, out: str) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    dataset = LeRobotDataset("rlmtl/export", root=root)
    items = [dataset[i] for i in range(len(dataset))]
    arrays = {}
    for key in items[0]:
        if key == "task":
            arrays["task"] = np.array([item["task"] for item in items])
        else:
            arrays[key] = np.stack([np.asarray(item[key]) for item in items])
    arrays["meta"] = np.array(
        json.dumps(
            {
                "num_episodes": dataset.num_episodes,
                "num_frames": dataset.num_frames,
                "fps": dataset.fps,
                "features": list(dataset.features),
                "video_keys": dataset.meta.video_keys,
                "stats_keys": sorted(dataset.meta.stats) if dataset.meta.stats else [],
                "video_backend": dataset.video_backend,
            }
        )
    )
    np.savez(out, **arrays)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    kind, source, target = sys.argv[1:4]
    if kind == "robomimic":
        read_robomimic(source, target, sys.argv[4] if len(sys.argv) > 4 else None)
    elif kind == "lerobot":
        read_lerobot(source, target)
    else:
        raise SystemExit(f"unknown reader {kind!r}")
