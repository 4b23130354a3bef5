#!/usr/bin/env python
"""The GPU path, checked on a CUDA machine: every weighting method trains the default MT10 agent
with no host synchronisation between log intervals, and its speed and peak memory are printed.

    python scripts/gpu_check.py [--steps 300] [--methods a,b,...] [--device cuda]

For each method (`scripts/bench_weighting.py`'s list: every registered method and the variants):
build the trainer of configs/mt10.yaml on `--device` (a synthetic MT10-shaped dataset, so no
simulator is needed), take 10 warm-up steps, then `--steps` training steps under
`torch.cuda.set_sync_debug_mode("error")`, which raises on any synchronising CUDA call (`.item()`,
`.cpu()`, a blocking copy, nonzero, ...). Log intervals are the only place rlmtl reads device values,
so the steps run through `Trainer.train_step` without the logging hook. Prints steps/s and the peak
allocated memory per method, and the methods that synchronised (with the call that did); then the
same for uniform with each agent option of AGENT_OPTIONS (bf16 autocast, the weights' moving
average, the gmm and chunk heads). Exit 1
when any method synchronised or failed. scripts/gpu_check.sh runs this and the CUDA-marked tests.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "tests" / "helpers"))


AGENT_OPTIONS = ["train.precision=bf16", "train.ema_decay=0.999", "agent.head=gmm", "agent.head=chunk"]  # checked with uniform


def check_method(method: str, dataset: Path, folder: Path, steps: int, device: str, extra: tuple[str, ...] = ()) -> dict:
    from bench_weighting import make_trainer

    overrides = [f"data.path={dataset}", f"train.device={device}", *extra]
    trainer = make_trainer(str(ROOT / "configs" / "mt10.yaml"), method, overrides, folder)
    cuda = torch.device(device).type == "cuda"  # --device cpu: a dry run of this script, without the sync check
    try:
        for _ in range(10):
            trainer.train_step()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            torch.cuda.set_sync_debug_mode("error")
        start = time.perf_counter()
        try:
            for _ in range(steps):
                trainer.train_step()
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
        if cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0
        return {"steps_per_s": steps / elapsed, "peak_mib": peak, "error": ""}
    except Exception as error:  # noqa: BLE001  (report every method, then fail)
        frames = traceback.extract_tb(error.__traceback__)
        where = next(
            (f"{Path(f.filename).name}:{f.lineno}" for f in reversed(frames) if "rlmtl" in f.filename or "agents" in f.filename), ""
        )
        return {"steps_per_s": 0.0, "peak_mib": 0.0, "error": f"{type(error).__name__} at {where}: {str(error).splitlines()[0][:160]}"}
    finally:
        trainer.release()


def main() -> int:
    from bench_weighting import default_methods
    from synthetic_runs import write_tiny_dataset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--methods", default="", help="comma-separated (default: every method and variant)")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run this on a CUDA machine (or --device cpu for a dry run)", file=sys.stderr)
        return 2
    from rlmtl.envs.metaworld_backend import MT10_TASKS

    methods = args.methods.split(",") if args.methods else default_methods()
    name = torch.cuda.get_device_name() if torch.device(args.device).type == "cuda" else "cpu (dry run)"
    print(f"gpu_check: {name} | torch {torch.__version__} | {args.steps} steps per method")
    failed = []
    with tempfile.TemporaryDirectory(prefix="rlmtl-gpu-") as tmp:
        dataset = write_tiny_dataset(Path(tmp) / "mt10.h5", tasks=list(MT10_TASKS))
        print("| method | steps/s | peak MiB | host syncs / errors |\n|---|---|---|---|")
        for method in methods:
            row = check_method(method, dataset, Path(tmp), args.steps, args.device)
            print(f"| {method} | {row['steps_per_s']:.1f} | {row['peak_mib']:.0f} | {row['error'] or 'none'} |", flush=True)
            if row["error"]:
                failed.append(method)
        print("\n| uniform with | steps/s | peak MiB | host syncs / errors |\n|---|---|---|---|")
        for index, option in enumerate(AGENT_OPTIONS):
            row = check_method("uniform", dataset, Path(tmp) / f"option{index}", args.steps, args.device, (option,))
            print(f"| {option} | {row['steps_per_s']:.1f} | {row['peak_mib']:.0f} | {row['error'] or 'none'} |", flush=True)
            if row["error"]:
                failed.append(f"uniform with {option}")
    if failed:
        print(f"gpu_check: FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
