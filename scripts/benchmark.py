#!/usr/bin/env python
"""Throughput of rlmtl on this machine: training samples/s, data-parallel training samples/s with
1 and 2 gloo processes (torchrun's setup, one torch thread each) and their scaling ratio, the cost
of TAG's affinity probe and of the gradient-conflict diagnostics (training time with them over
without, interleaved), evaluation episodes/s with 1 and 2 worker processes, and collection time per
100 demos (1 and 2 workers).

    python scripts/benchmark.py [CONFIG] [--checkpoint RUN_OR_CKPT] [--train-steps 300] [--ddp-only | --diagnostics-only]

Uses CONFIG's agent and batch (default configs/mt10.yaml). Evaluation uses the given checkpoint
(default: the main job's run folder if it exists, else a model trained briefly here), so episode
lengths are those of a working policy.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def bench_training(config, steps: int) -> float:
    from rlmtl.data.collect import collect
    from rlmtl.training.trainer import Trainer

    collect(config, progress=False)
    trainer = Trainer(config, progress=False)
    for _ in range(20):  # warm-up
        trainer.train_step()
    start = time.perf_counter()
    for _ in range(steps):
        losses, _ = trainer.train_step()
    losses.sum().item()  # wait for the device
    elapsed = time.perf_counter() - start
    return steps * config.train.batch_per_task * len(trainer.parts.tasks) / elapsed


def ddp_rank(rank: int, world_size: int, port: int, config, steps: int, results) -> None:
    """One data-parallel rank (as torchrun starts it): warm up, then time `steps` global steps."""
    import os

    from rlmtl.distributed import shutdown
    from rlmtl.training.trainer import Trainer

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    try:
        trainer = Trainer(config, progress=False)
        for _ in range(20):
            trainer.train_step()
        trainer.ranks.barrier()
        start = time.perf_counter()
        for _ in range(steps):
            losses, _ = trainer.train_step()
        losses.sum().item()
        trainer.ranks.barrier()
        if rank == 0:
            results.put(steps * config.train.batch_per_task * len(trainer.parts.tasks) / (time.perf_counter() - start))
    finally:
        shutdown()


def bench_ddp_training(config, steps: int, world_size: int) -> float:
    """Global training samples/s of `world_size` gloo ranks (global batch = CONFIG's batch_per_task)."""
    import socket
    from dataclasses import replace

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = replace(config, name=f"bench-ddp{world_size}", train=replace(config.train, device="cpu"))
    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    mp.start_processes(ddp_rank, args=(world_size, port, config, steps, results), nprocs=world_size, join=True, start_method="spawn")
    return results.get()


def bench_probe(config, steps: int, every: int, rounds: int = 5) -> float:
    """Per-step time with TAG's affinity probe at its configured interval over time without it,
    interleaved in rounds (median of the per-round ratios)."""
    import statistics
    from dataclasses import replace

    from rlmtl.training.trainer import Trainer

    plain = Trainer(replace(config, name=f"bench-plain-{every}", affinity=replace(config.affinity, probe_every=0)), progress=False)
    probed = Trainer(replace(config, name=f"bench-probe-{every}", affinity=replace(config.affinity, probe_every=every)), progress=False)
    ratios = []
    for _ in range(rounds):
        times = []
        for trainer in (plain, probed):
            start = time.perf_counter()
            for _ in range(steps):
                losses, _ = trainer.train_step()
            losses.sum().item()
            times.append(time.perf_counter() - start)
        ratios.append(times[1] / times[0])
    plain.release()
    probed.release()
    return statistics.median(ratios)


def bench_diagnostics(config, every: int, rounds: int = 31, single_steps: int = 300) -> dict[str, float]:
    """The gradient-conflict diagnostics' cost, two ways, from three trainers of CONFIG (diagnostics
    off, every `every` steps, every step) stepped in alternation in one process:

    * side by side: rounds of `every` steps of the first two (one measurement and the log step's host
      read of it, `take`, per round; which goes first alternates): the median per-round time ratio
      (`ratio`) and its range (`low`, `high`);
    * per measurement: single steps of the first and the third in alternation (each step waited for,
      the third's measurement read after it): the median extra milliseconds of a step with a
      measurement (`extra_ms`) over a step without (`step_ms`), and the ratio they imply at `every`,
      1 + extra / (every x step) (`implied`), which this machine's noise moves much less.
    """
    import statistics
    from dataclasses import replace

    from rlmtl.training.trainer import Trainer

    def trainer_every(interval: int) -> Trainer:
        name = f"bench-diag{interval}-{config.weighting.name}"
        return Trainer(replace(config, name=name, diagnostics=replace(config.diagnostics, every=interval)), progress=False)

    def timed(trainer: Trainer, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            losses, _ = trainer.train_step()
        losses.sum().item()  # wait for the device
        if trainer.parts.conflict is not None:
            trainer.parts.conflict.take()
        return time.perf_counter() - start

    plain, measured, always = trainer_every(0), trainer_every(every), trainer_every(1)
    for trainer in (plain, measured, always):  # warm-up, a measurement included
        timed(trainer, every)
    ratios = []
    for round_index in range(rounds):
        pair = (plain, measured) if round_index % 2 == 0 else (measured, plain)
        times = {trainer: timed(trainer, every) for trainer in pair}
        ratios.append(times[measured] / times[plain])
    singles: dict[Trainer, list[float]] = {plain: [], always: []}
    for index in range(single_steps):
        for trainer in (plain, always) if index % 2 == 0 else (always, plain):
            singles[trainer].append(timed(trainer, 1))
    for trainer in (plain, measured, always):
        trainer.release()
    step_ms = statistics.median(singles[plain]) * 1000
    extra_ms = statistics.median(singles[always]) * 1000 - step_ms
    return {
        "ratio": statistics.median(ratios),
        "low": min(ratios),
        "high": max(ratios),
        "step_ms": step_ms,
        "extra_ms": extra_ms,
        "implied": 1 + extra_ms / (every * step_ms),
    }


def bench_eval(checkpoint: str, episodes: int, workers: int) -> float:
    from rlmtl.evaluation.evaluate import evaluate_checkpoint
    from rlmtl.evaluation.settings import EvalSettings

    start = time.perf_counter()
    result = evaluate_checkpoint(checkpoint, EvalSettings(episodes_per_task=episodes, workers=workers, progress=False))
    assert result is not None
    return result["overall"]["episodes"] / (time.perf_counter() - start)


def bench_collect(config, workers: int, demos_per_task: int, folder: Path) -> float:
    from dataclasses import replace

    from rlmtl.data.collect import collect

    config = replace(
        config, data=replace(config.data, workers=workers, demos_per_task=demos_per_task, cache_dir=str(folder / f"w{workers}"))
    )
    start = time.perf_counter()
    collect(config, progress=False)
    total = demos_per_task * len(config.env.tasks or range(10))
    return (time.perf_counter() - start) * 100 / total


def print_diagnostics_cost(config, rounds: int) -> None:
    """The gradient-conflict diagnostics at CONFIG's interval (the default unless CONFIG sets one), with
    CONFIG's method and with PCGrad, whose task gradients the diagnostics reuse."""
    from dataclasses import replace

    from rlmtl.config import DiagnosticsConfig

    every = config.diagnostics.every or DiagnosticsConfig().every
    for method in dict.fromkeys([config.weighting.name, "pcgrad"]):
        cost = bench_diagnostics(replace(config, weighting=replace(config.weighting, name=method, params={})), every, rounds)
        print(
            f"gradient-conflict diagnostics every {every} steps ({method}): {cost['ratio']:.3f}x the training time without them "
            f"(median of {rounds} interleaved rounds of {every} steps, range {cost['low']:.2f}-{cost['high']:.2f}); "
            f"one measurement adds {cost['extra_ms']:.1f} ms to a {cost['step_ms']:.1f} ms step, {cost['implied']:.3f}x at every {every}"
        )


def main() -> int:
    from rlmtl.config import load_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default=str(ROOT / "configs" / "mt10.yaml"))
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--eval-episodes", type=int, default=10, help="per task")
    parser.add_argument("--collect-demos", type=int, default=10, help="per task")
    parser.add_argument("--ddp-steps", type=int, default=200, help="timed steps of the data-parallel measurement")
    parser.add_argument("--ddp-batch-per-task", type=int, default=0, help="global batch per task of that measurement; 0 = CONFIG's")
    parser.add_argument("--ddp-only", action="store_true", help="only the 1-vs-2-process data-parallel training measurement")
    parser.add_argument("--diagnostics-rounds", type=int, default=31, help="rounds of the gradient-conflict diagnostics measurement")
    parser.add_argument(
        "--diagnostics-only", action="store_true", help="only the gradient-conflict diagnostics' cost (no data-parallel, evaluation, ...)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = load_config(args.config, [f"out_dir={folder / 'runs'}", "name=bench"])
        from rlmtl.data.collect import collect

        collect(config, progress=False)
        if args.diagnostics_only:
            print_diagnostics_cost(config, args.diagnostics_rounds)
            return 0
        from dataclasses import replace

        batch = args.ddp_batch_per_task or config.train.batch_per_task
        ddp_config = replace(config, train=replace(config.train, batch_per_task=batch))
        ddp = {n: bench_ddp_training(ddp_config, args.ddp_steps, n) for n in (1, 2)}
        print(
            f"data-parallel training (gloo, 1 torch thread per process): 1 process {ddp[1]:,.0f} samples/s, "
            f"2 processes {ddp[2]:,.0f} samples/s, scaling {ddp[2] / ddp[1]:.2f}x (global batch {batch}x10)"
        )
        if args.ddp_only:
            return 0
        threads = torch.get_num_threads()
        samples = bench_training(config, args.train_steps)
        print(
            f"training: {samples:,.0f} samples/s ({samples / (config.train.batch_per_task * 10):.0f} steps/s, batch {config.train.batch_per_task}x10, {threads} torch threads)"
        )
        from rlmtl.tag.probe import DEFAULT_PROBE_EVERY

        for every in sorted({config.affinity.probe_every or DEFAULT_PROBE_EVERY, 10}):
            ratio = bench_probe(config, 100, every)
            print(f"affinity probe every {every} steps: {ratio:.2f}x the training step time without it")
        print_diagnostics_cost(config, args.diagnostics_rounds)
        checkpoint = args.checkpoint
        main_run = ROOT / "runs" / "mt10-uniform-seed0"
        if checkpoint is None and (main_run / "checkpoints" / "last").is_file():
            checkpoint = str(main_run)
        if checkpoint is None:
            from rlmtl.training.trainer import train

            checkpoint = str(
                train(
                    load_config(args.config, [f"out_dir={folder / 'runs'}", "name=bench-eval", "train.steps=3000"]), progress=False
                ).run_dir
            )
        rates = {w: bench_eval(checkpoint, args.eval_episodes, w) for w in (1, 2)}
        print(
            f"evaluation ({checkpoint}): 1 worker {rates[1]:.2f} episodes/s, 2 workers {rates[2]:.2f} episodes/s, ratio {rates[2] / rates[1]:.2f}x"
        )
        per100 = {w: bench_collect(config, w, args.collect_demos, folder) for w in (1, 2)}
        print(
            f"collection: {per100[1]:.1f} s per 100 demos with 1 worker, {per100[2]:.1f} s with 2 workers, ratio {per100[1] / per100[2]:.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
