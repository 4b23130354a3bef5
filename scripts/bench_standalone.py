#!/usr/bin/env python
"""Cost of the task-gradient methods in standalone use (`MultiTaskBackward` on a plain model),
relative to `uniform`, with the K losses passed as a list and as one stacked tensor.

    python scripts/bench_standalone.py [--rounds 10] [--steps 5] [--tasks 10] [--hidden 512] [--batch 128]
        [--official PATH]   (PATH: a clone of lorenmt/auto-lambda, to time its GradDrop step beside rlmtl's)

The model: a shared 2-layer MLP trunk and a `ModuleList` of K linear heads; every task has its own
batch of `--batch` samples, so the K losses have separate graphs (as in multi-task BC). One step =
forward, `balance.backward`, AdamW step, `after_step`. All variants are built on the same data and
stepped round-robin in ONE process with one torch thread, so machine noise hits them alike; the
table gives the median per-step time over rounds and its ratio to uniform (given a list).
With --official, the official Auto-Lambda GradDrop step runs in the same rounds on the same model
and data, calling that clone's own `utils.grad2vec`, `graddrop` and `overwrite_grad` as its
trainer_dense.py does (one `backward(retain_graph=True)` per task, then the drop, then AdamW).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import torch

METHODS = ["uniform", "pcgrad", "cagrad", "imtl_g", "db_mtl", "graddrop"]


class Model(torch.nn.Module):
    def __init__(self, tasks: int, hidden: int, inputs: int = 64) -> None:
        super().__init__()
        self.trunk = torch.nn.Sequential(torch.nn.Linear(inputs, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden), torch.nn.ReLU())
        self.heads = torch.nn.ModuleList(torch.nn.Linear(hidden, 4) for _ in range(tasks))

    def forward(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> list[torch.Tensor]:
        """The K task losses, each through its own graph."""
        return [torch.nn.functional.mse_loss(head(self.trunk(x)), y) for head, (x, y) in zip(self.heads, batches)]


def make_variant(method: str, tasks: int, hidden: int):
    from rlmtl.weighting import MultiTaskBackward, make_weighting

    torch.manual_seed(0)
    model = Model(tasks, hidden)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    balance = MultiTaskBackward(make_weighting(method, tasks), model.trunk.parameters(), model.heads.parameters(), optimizer=optimizer)
    return model, optimizer, balance


class OfficialModel(Model):
    """The same model with the two methods Auto-Lambda's gradient utilities call."""

    def shared_modules(self) -> list[torch.nn.Module]:
        return [self.trunk]

    def zero_grad_shared_modules(self) -> None:
        self.trunk.zero_grad(set_to_none=False)


def official_variant(clone: Path, tasks: int, hidden: int):
    """(model, optimizer, step function) of Auto-Lambda's GradDrop, from the clone's utils.py."""
    spec = importlib.util.spec_from_file_location("auto_lambda_utils", clone / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    torch.manual_seed(0)
    model = OfficialModel(tasks, hidden)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    grad_dims = [p.numel() for p in model.trunk.parameters()]
    grads = torch.zeros(sum(grad_dims), tasks)

    def official_step(batches) -> None:
        optimizer.zero_grad()
        losses = model(batches)
        for i in range(tasks):
            losses[i].backward(retain_graph=True)
            utils.grad2vec(model, grads, grad_dims, i)
            model.zero_grad_shared_modules()
        utils.overwrite_grad(model, utils.graddrop(grads), grad_dims, tasks)
        optimizer.step()

    return official_step


def step(model, optimizer, balance, batches, stacked: bool) -> None:
    optimizer.zero_grad(set_to_none=True)
    losses = model(batches)
    balance.backward(torch.stack(losses) if stacked else losses)
    optimizer.step()
    balance.after_step()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=5, help="steps per variant per round")
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--official", type=Path, default=None, help="a clone of lorenmt/auto-lambda")
    args = parser.parse_args()
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(args.batch, 64, generator=generator), torch.randn(args.batch, 4, generator=generator)) for _ in range(args.tasks)
    ]
    variants = {(m, stacked): make_variant(m, args.tasks, args.hidden) for m in METHODS for stacked in (False, True)}
    times: dict[tuple[str, bool], list[float]] = {key: [] for key in variants}
    official = official_variant(args.official, args.tasks, args.hidden) if args.official else None
    official_times: list[float] = []
    for key, parts in variants.items():  # warm-up
        step(*parts, batches, key[1])
    if official is not None:
        official(batches)
    for _ in range(args.rounds):
        for key, parts in variants.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                step(*parts, batches, key[1])
            times[key].append((time.perf_counter() - start) / args.steps)
        if official is not None:
            start = time.perf_counter()
            for _ in range(args.steps):
                official(batches)
            official_times.append((time.perf_counter() - start) / args.steps)
    base = statistics.median(times[("uniform", False)])
    print(f"K={args.tasks}, hidden {args.hidden}, batch {args.batch} per task; median ms/step over {args.rounds} rounds; x uniform (list)")
    print("| method | list: ms/step | list: x uniform | stacked: ms/step | stacked: x uniform |\n|---|---|---|---|---|")
    for method in METHODS:
        listed, stacked = statistics.median(times[(method, False)]), statistics.median(times[(method, True)])
        print(f"| {method} | {listed * 1e3:.1f} | {listed / base:.2f} | {stacked * 1e3:.1f} | {stacked / base:.2f} |")
    if official_times:
        theirs, ours = statistics.median(official_times), statistics.median(times[("graddrop", False)])
        print(f"| graddrop, official Auto-Lambda ({args.official}) | {theirs * 1e3:.1f} | {theirs / base:.2f} | | |")
        print(f"rlmtl graddrop (list) / official: {ours / theirs:.2f}x the time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
