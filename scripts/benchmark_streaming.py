#!/usr/bin/env python
"""Training on data larger than memory: peak resident memory and throughput of the streamed path
(camera frames read from the file per batch) beside the in-memory path.

    python scripts/benchmark_streaming.py [--full PATH] [--small PATH] [--steps 20] [--batch-per-task 8]

Makes (if missing) two synthetic rlbench10 datasets with scripts/make_synthetic_rlbench.py: `small`
(5 demos per task, 1.7 GB of frames, fits in memory) and `full` (100 demos per task, 33.4 GB of
frames: rlbench10 with four 128x128 cameras and every step). Each measurement runs in a fresh
process, one after the other, with one torch thread (so they do not share cores):
  1. small, in memory (data.memory_budget_gb large),  2. small, streamed (budget 0),
  3. full, streamed (the default budget: the data exceeds it).
Each reports the batches/s of the sampler alone, the samples/s of full training steps (configs/rlbench10.yaml's agent:
proprio and four 128x128 cameras), and the process's peak resident memory (ru_maxrss).
The ratios streamed/in-memory are printed for the small dataset, measured side by side in this run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(dataset: str, budget_gb: float, steps: int, batch_per_task: int, folder: str) -> dict:
    """Run in a fresh process: sampler batches/s, training samples/s, peak RSS."""
    import resource

    import torch

    from rlmtl.config import load_config
    from rlmtl.training.trainer import Trainer

    torch.set_num_threads(1)
    overrides = [
        f"data.path={dataset}",
        f"data.memory_budget_gb={budget_gb}",
        f"train.batch_per_task={batch_per_task}",
        f"out_dir={folder}",
        f"name=bench-{budget_gb}",
    ]
    config = load_config(str(ROOT / "configs" / "rlbench10.yaml"), overrides)
    trainer = Trainer(config, progress=False)
    sampler = trainer.parts.sampler
    tasks = len(trainer.parts.tasks)
    try:
        sampler.sample()  # warm-up (opens the file, fills the read-ahead)
        start = time.perf_counter()
        for _ in range(steps):
            sampler.sample()
        batches_per_s = steps / (time.perf_counter() - start)
        trainer.train_step()  # warm-up
        start = time.perf_counter()
        for _ in range(steps):
            losses, _ = trainer.train_step()
        losses.sum().item()
        samples_per_s = steps * batch_per_task * tasks / (time.perf_counter() - start)
    finally:
        trainer.release()
    return {
        "streamed": type(sampler).__name__ == "StreamingSampler",
        "sampler_batches_per_s": batches_per_s,
        "sampler_samples_per_s": batches_per_s * batch_per_task * tasks,
        "train_samples_per_s": samples_per_s,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def run_measurement(dataset: Path, budget_gb: float, steps: int, batch_per_task: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="rlmtl-bench-") as folder:
        code = (
            f"import json, sys; sys.path.insert(0, {str(ROOT / 'scripts')!r}); import benchmark_streaming as b; "
            f"print(json.dumps(b.measure({str(dataset)!r}, {budget_gb}, {steps}, {batch_per_task}, {folder!r})))"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"benchmark_streaming: the measurement on {dataset} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def ensure(path: Path, demos: int) -> None:
    if not path.is_file():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_synthetic_rlbench.py"), str(path), "--demos", str(demos)], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", type=Path, default=ROOT / "data" / "synthetic-rlbench10-full.h5")
    parser.add_argument("--small", type=Path, default=ROOT / "data" / "synthetic-rlbench10-small.h5")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-per-task", type=int, default=8)
    args = parser.parse_args()
    ensure(args.small, 5)
    ensure(args.full, 100)
    rows = [
        ("small (1.7 GB of frames), in memory", run_measurement(args.small, 1000.0, args.steps, args.batch_per_task)),
        ("small, streamed", run_measurement(args.small, 0.0, args.steps, args.batch_per_task)),
        ("full (33.4 GB of frames), streamed", run_measurement(args.full, 8.0, args.steps, args.batch_per_task)),
    ]
    print("| data | path | sampler samples/s | training samples/s | peak RSS (GiB) |\n|---|---|---|---|---|")
    for name, row in rows:
        path = "streamed" if row["streamed"] else "in memory"
        print(f"| {name} | {path} | {row['sampler_samples_per_s']:.0f} | {row['train_samples_per_s']:.1f} | {row['peak_rss_gib']:.2f} |")
    memory, streamed = rows[0][1], rows[1][1]
    print(
        f"streamed / in memory on the small dataset: sampler {streamed['sampler_samples_per_s'] / memory['sampler_samples_per_s']:.2f}x, "
        f"training {streamed['train_samples_per_s'] / memory['train_samples_per_s']:.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
