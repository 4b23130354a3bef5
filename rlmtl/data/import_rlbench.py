"""`rlmtl import-rlbench PATH CONFIG`: a folder written by RLBench's dataset generator -> rlmtl's dataset.

PATH holds one folder per task in the upstream layout (`<task>/variation<V>/episodes/episode<M>`)
or the PerAct fork's (`<task>/all_variations/episodes/episode<M>`); see envs/rlbench_format.py.
The config says which tasks (`env.tasks`), cameras and image size, which variation
(`env.options.variation`, -1 = all), how many demos per task (`data.demos_per_task`, the first ones
by episode number) and the action space (`env.options.action_mode`). Only the configured cameras' RGB frames
are read. The file is written to `data.path` (or the cache path the config names), with the
config's dataset fingerprint, so `rlmtl train CONFIG` / `rlmtl run CONFIG` use it as is and never
need the simulator. `renderer` (`--renderer`) is the renderer the generator ran with, recorded in the
dataset (default `opengl3`, the default of RLBench's dataset generator and of its `CameraConfig`);
training and evaluation warn when the config's `env.options.render_mode` differs. A folder under
PATH that is not a task of the suite is named in a warning and skipped.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

from rlmtl.config import RunConfig, dataset_path
from rlmtl.data.collect import dataset_attrs
from rlmtl.data.dataset import Episode, TaskRecord, check_replaceable, write_dataset
from rlmtl.envs import make_suite
from rlmtl.envs.rlbench_backend import RENDER_MODES, RLBenchOptions
from rlmtl.envs.rlbench_convert import demo_episode
from rlmtl.envs.rlbench_format import EpisodeRef, episode_variation, find_episodes, load_demo, read_episode
from rlmtl.errors import ConfigError, DatasetError
from rlmtl.folder_lock import FolderLock
from rlmtl.pool import Job, RobustPool, resolve_workers
from rlmtl.progress import progress_bar


def convert_episode(
    ref: EpisodeRef, cameras: tuple[str, ...], image_size: int, action_mode: str, samples: str, variation: int
) -> Episode | None:
    """Worker job: one stored episode as an rlmtl Episode; None when it is of another variation."""
    demo = load_demo(ref.path / "low_dim_obs.pkl")
    if variation >= 0 and episode_variation(ref, demo) != variation:
        return None
    stored = read_episode(ref, cameras, ("rgb",), image_size)
    return demo_episode(
        stored.demo, stored.images, cameras, action_mode, samples, scene_seed=ref.number, attempt=ref.number, source=str(ref.path)
    )


GENERATOR_RENDERER = "opengl3"  # RLBench dataset_generator.py:288 --renderer default; observation_config.py:14 CameraConfig


def import_rlbench(
    root: str | Path,
    config: RunConfig,
    out: str | Path | None = None,
    samples: str = "all",
    progress: bool = True,
    renderer: str = GENERATOR_RENDERER,
) -> Path:
    """Convert the RLBench dataset under `root` as `config` describes; returns the written file."""
    root = Path(root)
    if config.env.backend != "rlbench":
        raise ConfigError(f"import-rlbench: env.backend is {config.env.backend!r}; use an RLBench config (e.g. configs/rlbench10.yaml)")
    if samples not in ("all", "keyframes"):
        raise ConfigError(f"import-rlbench: --samples must be all or keyframes, got {samples!r}")
    if renderer not in RENDER_MODES:
        raise ConfigError(f"import-rlbench: --renderer must be one of {', '.join(RENDER_MODES)}, got {renderer!r}")
    options: RLBenchOptions = config.env.options
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder (expected the --save_path of RLBench's dataset generator)")
    suite = make_suite(config.env.backend, config.env.suite)
    tasks = suite.select_tasks(config.env.tasks)
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in suite.task_names):
        print(f"rlmtl import-rlbench: warning: {folder}: not a task of {suite.name}; skipped", file=sys.stderr)
    cameras = tuple(config.env.cameras)
    obs_spec = suite.observation_spec(list(cameras), config.env.image_size)
    path = Path(out) if out else dataset_path(config)
    check_replaceable(path)
    wanted = config.data.demos_per_task
    refs = {task: find_episodes(root, task, options.variation) for task in tasks}
    workers = min(resolve_workers(config.data.workers), max(1, sum(len(r) for r in refs.values())))
    shortfall: dict[str, int] = {}

    def records() -> Iterator[TaskRecord]:
        # one task in memory at a time: write_dataset consumes this generator task by task
        with RobustPool(workers, max_retries=0) as pool:
            for task in tasks:
                bar = progress_bar(wanted, f"import {task}", "demo", progress)
                kept: list[Episode] = []
                pending = list(refs[task])
                while pending and len(kept) < wanted:
                    batch, pending = pending[: wanted - len(kept)], pending[wanted - len(kept) :]
                    args = (cameras, config.env.image_size, options.action_mode, samples, options.variation)
                    converted: dict[int, Episode | None] = {}
                    for result in pool.run(Job(index, convert_episode, (ref, *args)) for index, ref in enumerate(batch)):
                        if not result.ok:
                            raise DatasetError(f"{batch[result.key].path}: cannot convert this episode ({result.error})")
                        converted[result.key] = result.value
                    for index in range(len(batch)):  # in folder order, whatever order the workers finished in
                        episode = converted[index]
                        if episode is not None:
                            kept.append(episode)
                            bar.update(1)
                bar.close()
                if not kept:
                    raise DatasetError(f"{root / task}: no episode of variation {options.variation} found")
                if len(kept) < wanted:
                    shortfall[task] = wanted - len(kept)
                yield TaskRecord(task, suite.task_index(task), kept, wanted, len(refs[task]))

    seeds = {"split": "train", "source": "rlbench dataset", "scene_seed": "episode number in the RLBench folder"}
    attrs = {
        **dataset_attrs(config, suite, tasks, obs_spec, seeds, renderer=renderer),
        "rlbench": {
            "root": str(root.resolve()),
            "action_mode": options.action_mode,
            "variation": options.variation,
            "samples": samples,
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with FolderLock(path.parent, "rlmtl import-rlbench", f".{path.name}.lock"):
        write_dataset(path, attrs, records())
    if shortfall:
        details = ", ".join(f"{task}: {wanted - missing}/{wanted}" for task, missing in shortfall.items())
        print(f"rlmtl import-rlbench: fewer demos than data.demos_per_task ({details})", file=sys.stderr)
    print(f"rlmtl import-rlbench: wrote {path} ({len(tasks)} tasks from {root})", file=sys.stderr)
    return path
