#!/usr/bin/env python
"""A synthetic dataset with rlbench10's shapes and size, for measuring training on data that does
not fit in memory (no simulator needed).

    python scripts/make_synthetic_rlbench.py OUT.h5 [--demos 100] [--steps 170] [--size 128]
        [--cameras front left_shoulder right_shoulder wrist] [--tasks N]

The file is an rlmtl dataset in every respect the trainer reads: attributes (backend rlbench,
suite rlbench10, observation and action specs, renderer, image size), `data/<task>/demo_<i>` with
22-d `state`, 8-d `proprio`, 8-d keyframe-style `actions`, one `rgb_<camera>` uint8 frame per step
in a gzip chunk of its own (as rlmtl's writer stores them), per-task statistics, and the sha256 seal.
Defaults: the 10 tasks, 100 demos each (the Auto-Lambda setting), 170 steps per demo (an assumed
average length of a joint-velocity RLBench demo, every step kept), four 128x128 cameras: 33.4 GB
of uncompressed frames. Frames are drawn from a pool of distinct synthetic scenes (a table, an
object at a varying place, mild noise) that is gzip-compressed once and written chunk by chunk
(`write_direct_chunk`), so the file takes minutes, not the hour that compressing every frame would;
reading still decompresses every frame, as with real data.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CAMERAS = ["front", "left_shoulder", "right_shoulder", "wrist"]
GZIP_LEVEL = 4  # rlmtl's writer (rlmtl/data/dataset.py)


def frame_pool(size: int, count: int, seed: int) -> list[bytes]:
    """`count` distinct [size, size, 3] uint8 scenes, each zlib-compressed (HDF5's gzip filter format)."""
    rng = np.random.default_rng(seed)
    rows = np.arange(size)[:, None]
    pool = []
    for index in range(count):
        image = np.empty((size, size, 3), np.uint8)
        image[...] = (np.array([90, 80, 70]) + rows * 40 // size)[:, None, :]
        side = size // 6
        x, y = (index * 7) % (size - side), (index * 13) % (size - side)
        image[y : y + side, x : x + side] = rng.integers(40, 220, 3)
        image = (image + rng.integers(0, 4, image.shape)).astype(np.uint8)
        pool.append(zlib.compress(image.tobytes(), GZIP_LEVEL))
    return pool


def write_synthetic(out: Path, tasks: list[str], demos: int, steps: int, cameras: list[str], size: int, pool_size: int = 64) -> None:
    import h5py

    from rlmtl.atomic import atomic_path
    from rlmtl.data.dataset import FORMAT, FORMAT_VERSION, seal, summary_stats
    from rlmtl.envs.rlbench_convert import PROPRIO_DIM, STATE_DIM

    rng = np.random.default_rng(0)
    pools = {camera: frame_pool(size, pool_size, seed) for seed, camera in enumerate(cameras)}
    spec = {"state": {"shape": [STATE_DIM], "dtype": "float32"}, "proprio": {"shape": [PROPRIO_DIM], "dtype": "float32"}}
    spec.update({f"rgb_{camera}": {"shape": [size, size, 3], "dtype": "uint8"} for camera in cameras})
    attrs = {
        "backend": "rlbench",
        "suite": "rlbench10",
        "tasks": tasks,
        "observation_spec": spec,
        "action_spec": {"shape": [8], "dtype": "float32"},
        "renderer": "opengl",  # configs/rlbench10.yaml renders with opengl
        "image_size": size,
        "fingerprint": "synthetic",
        "seeds": {"source": "scripts/make_synthetic_rlbench.py"},
    }
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w", userblock_size=512) as handle:
            handle.attrs.update(format=FORMAT, format_version=FORMAT_VERSION, rlmtl_version="synthetic")
            for key, value in attrs.items():
                handle.attrs[key] = value if isinstance(value, (str, int, float)) else json.dumps(value)
            for index, task in enumerate(tasks):
                group = handle.create_group(f"data/{task}")
                group.attrs.update(task_index=index, num_demos=demos, num_steps=demos * steps, requested_demos=demos, attempts=demos)
                states, actions = [], []
                for number in range(demos):
                    demo = group.create_group(f"demo_{number}")
                    demo.attrs.update(scene_seed=number, attempt=number, length=steps)
                    state = rng.normal(size=(steps, STATE_DIM)).astype(np.float32)
                    action = rng.uniform(-1, 1, (steps, 8)).astype(np.float32)
                    demo.create_dataset("obs/state", data=state)
                    demo.create_dataset("obs/proprio", data=state[:, :PROPRIO_DIM])
                    demo.create_dataset("actions", data=action)
                    demo.create_dataset("rewards", data=np.zeros(steps, np.float32))
                    demo.create_dataset("success", data=np.arange(steps) == steps - 1)
                    for camera in cameras:
                        frames = demo.create_dataset(
                            f"obs/rgb_{camera}", (steps, size, size, 3), np.uint8, chunks=(1, size, size, 3), compression="gzip",
                            compression_opts=GZIP_LEVEL,
                        )  # fmt: skip
                        for t in range(steps):
                            frames.id.write_direct_chunk((t, 0, 0, 0), pools[camera][(number * 31 + t) % pool_size])
                    states.append(state)
                    actions.append(action)
                for key, values in (("state", np.concatenate(states)), ("proprio", np.concatenate(states)[:, :PROPRIO_DIM])):
                    for name, value in summary_stats(values).items():
                        handle.create_dataset(f"stats/{task}/{key}/{name}", data=value)
                for name, value in summary_stats(np.concatenate(actions)).items():
                    handle.create_dataset(f"stats/{task}/actions/{name}", data=value)
                print(f"make_synthetic_rlbench: {task} ({index + 1}/{len(tasks)})", file=sys.stderr)
        seal(tmp)


def main() -> int:
    from rlmtl.envs.rlbench_backend import RLBENCH10_TASKS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--tasks", type=int, default=len(RLBENCH10_TASKS), help="the first N of rlbench10's tasks")
    parser.add_argument("--demos", type=int, default=100)
    parser.add_argument("--steps", type=int, default=170)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--cameras", nargs="+", default=CAMERAS)
    args = parser.parse_args()
    start = time.perf_counter()
    write_synthetic(args.out, RLBENCH10_TASKS[: args.tasks], args.demos, args.steps, args.cameras, args.size)
    frames = args.tasks * args.demos * args.steps * len(args.cameras)
    raw = frames * args.size * args.size * 3
    print(
        f"make_synthetic_rlbench: {args.out}: {frames} frames, {raw / 1e9:.1f} GB uncompressed, "
        f"{args.out.stat().st_size / 1e9:.1f} GB on disk, {time.perf_counter() - start:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
