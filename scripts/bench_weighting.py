#!/usr/bin/env python
"""Per-step cost of every weighting method relative to `uniform`, on the default MT10 agent and batch.

    python scripts/bench_weighting.py [CONFIG] [--rounds 15] [--steps-per-round 20] [--methods a,b,...]

Time: all methods are built on the same data and stepped round-robin in ONE process (each round
runs every method for a few full training steps: sample, losses, weighting, backward, clip,
AdamW, post-step work), so machine noise hits them alike; the table gives the median per-step
time over rounds, its ratio to uniform and the spread (min-max of the per-round ratio).
Memory: in a fresh process per method, the peak memory the training steps use above the resident
set after two warm-up steps, with glibc told to map large allocations individually so that the
resident set follows the live tensors (on CUDA: peak allocated device memory above the allocated
baseline).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def default_methods() -> list[str]:
    from rlmtl.weighting import WEIGHTINGS

    names = WEIGHTINGS.names()
    variants = [
        "auto_lambda@update_every=4",
        "auto_lambda@lookahead=real",
        "auto_lambda@update_every=4@lookahead=real",
        "cagrad@update_weights_every=2",
        "nash_mtl@update_weights_every=4",
        "hydalearn@variant=first_order",
        "auto_lambda+cagrad",
    ]
    return ["uniform"] + [n for n in names if n != "uniform"] + variants


def method_overrides(method: str, num_tasks: int = 10) -> list[str]:
    """Config overrides for a method spec `name` or `name@key=value@key=value` (its params);
    auxiliary-mode methods get a primary task."""
    from rlmtl.weighting import make_weighting

    name, *params = method.split("@")
    overrides = [f"weighting.name={name}", *(f"weighting.params.{p}" for p in params)]
    if make_weighting(name, num_tasks).requirements.primary_tasks:
        overrides.append("weighting.primary_tasks=[peg-insert-side-v3]")
    return overrides


def make_trainer(config_path: str, method: str, extra: list[str], folder: Path):
    from rlmtl.config import load_config
    from rlmtl.training.trainer import Trainer

    run_name = "bench-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in method)
    overrides = [f"out_dir={folder}", f"name={run_name}", *method_overrides(method), *extra]
    return Trainer(load_config(config_path, overrides), progress=False)


def time_methods(config_path: str, methods: list[str], extra: list[str], rounds: int, steps: int) -> dict[str, list[float]]:
    from rlmtl.config import load_config
    from rlmtl.data.collect import collect

    collect(load_config(config_path, extra), progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {m: make_trainer(config_path, m, extra, Path(tmp)) for m in methods}
        for trainer in trainers.values():  # warm-up
            for _ in range(3):
                trainer.train_step()
        per_round: dict[str, list[float]] = {m: [] for m in methods}
        for _ in range(rounds):
            for method, trainer in trainers.items():
                start = time.perf_counter()
                for _ in range(steps):
                    losses, _ = trainer.train_step()
                losses.sum().item()  # wait for the device before stopping the clock
                per_round[method].append((time.perf_counter() - start) / steps)
    return per_round


def _proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def step_memory(config_path: str, method: str, extra: list[str], steps: int) -> float:
    """Peak memory in MiB that training steps of `method` use above the process's resident set
    after two warm-up steps (Adam and method state allocated), in a fresh process. On Linux the
    peak is reset through /proc/self/clear_refs; on CUDA it is the peak allocated device memory."""
    import gc

    with tempfile.TemporaryDirectory() as tmp:
        trainer = make_trainer(config_path, method, extra, Path(tmp))
        for _ in range(2):
            trainer.train_step()
        gc.collect()
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            for _ in range(steps):
                trainer.train_step()
            torch.cuda.synchronize()
            return (torch.cuda.max_memory_allocated() - base) / 2**20
        base = _proc_status_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        for _ in range(steps):
            trainer.train_step()
        return (_proc_status_kib("VmHWM") - base) / 1024


def peak_memory(config_path: str, method: str, extra: list[str], steps: int) -> float:
    """`step_memory` of `method`, measured in a fresh Python process."""
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT / 'scripts')!r}); import bench_weighting as b;"
        f"print(b.step_memory({config_path!r}, {method!r}, {extra!r}, {steps}))"
    )
    # glibc maps every allocation of 64 KiB or more on its own and returns freed memory at once, so
    # the resident set follows the live tensors: without this, reuse of freed heap memory made
    # the peak vary by tens of MiB between runs
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{method}: {result.stderr.strip().splitlines()[-1] if result.stderr else 'failed'}")
    return float(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default=str(ROOT / "configs" / "mt10.yaml"))
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps-per-round", type=int, default=20)  # a multiple of the update_every=4 variants
    parser.add_argument("--memory-steps", type=int, default=20)
    parser.add_argument(
        "--methods",
        default="",
        help="comma-separated specs name[@key=value...]; default: every registered method and the documented variants",
    )
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. train.device=cuda")
    args = parser.parse_args()
    methods = args.methods.split(",") if args.methods else default_methods()
    if "uniform" not in methods:
        methods.insert(0, "uniform")
    per_round = time_methods(args.config, methods, args.overrides, args.rounds, args.steps_per_round)
    base = per_round["uniform"]
    memory = {m: peak_memory(args.config, m, args.overrides, args.memory_steps) for m in methods}
    print(f"threads {torch.get_num_threads()}, {args.rounds} rounds x {args.steps_per_round} steps, config {Path(args.config).name}")
    print("| method | ms / step (median) | × uniform | spread (min–max ×) | step memory (MiB) | × uniform memory |")
    print("|---|---|---|---|---|---|")
    for method in methods:
        times = per_round[method]
        ratios = [t / b for t, b in zip(times, base)]
        median = statistics.median(times)
        print(
            f"| {method} | {median * 1000:.2f} | {median / statistics.median(base):.2f} | {min(ratios):.2f}–{max(ratios):.2f} | {memory[method]:.1f} | {memory[method] / max(memory['uniform'], 1e-9):.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
