"""Load test of `rlmtl eval`: T tasks x E episodes of a small checkpoint, with peak memory and pool CPU use.

    python scripts/bench_eval_load.py --tasks 10 --episodes 100 --workers 0 --out /tmp/bench_eval

The checkpoint is an untrained state-based agent for Meta-World MT10 (built here, no training), so
nearly every episode runs the full 500 steps: the worst case for the evaluator's load. A sampler
thread reads /proc every 0.5 s for the evaluating process and all its descendants (the worker
pool): the peak of their summed resident memory, and their CPU time. CPU utilisation of the pool
is (CPU seconds of parent + workers) / (wall seconds x cores available). Linux only (/proc).
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    tree, stack = [], [pid]
    while stack:
        current = stack.pop()
        tree.append(current)
        stack.extend(_children(current))
    return tree


def sample(pids: list[int]) -> tuple[int, dict[int, float]]:
    """(summed RSS in bytes, {pid: CPU seconds}) of `pids`."""
    rss, cpu = 0, {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            rss += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        except (OSError, IndexError):
            continue
        cpu[pid] = (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime
    return rss, cpu


class LoadSampler(threading.Thread):
    """Polls the process tree until stopped; keeps the peak RSS and the last CPU time of each pid."""

    def __init__(self, interval_s: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.peak_rss = 0
        self.peak_processes = 0
        self.cpu: dict[int, float] = {}
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            pids = process_tree(os.getpid())
            rss, cpu = sample(pids)
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_processes = max(self.peak_processes, len(pids))
            self.cpu.update(cpu)
            self.stopped.wait(self.interval_s)


def small_checkpoint(folder: Path, tasks: int) -> Path:
    """An untrained MT10 state agent's checkpoint (the first `tasks` tasks)."""
    import torch

    from rlmtl.build import agent_meta, build_agent
    from rlmtl.config import load_config
    from rlmtl.envs import make_suite
    from rlmtl.training.checkpoint import save_checkpoint

    suite = make_suite("metaworld", "mt10")
    names = suite.task_names[:tasks]
    config = load_config(None, [f"env.tasks=[{','.join(names)}]", "agent.hidden_dim=256"])
    spec = {key: value.to_dict() for key, value in suite.observation_spec([], 64).items()}
    meta = agent_meta(config, names, spec, suite.action_spec().shape[0])
    torch.manual_seed(0)
    agent = build_agent(meta)
    return save_checkpoint(folder / "bench.pt", {"meta": meta, "step": 0, "model": agent.state_dict()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--episodes", type=int, default=100, help="episodes per task")
    parser.add_argument("--workers", type=int, default=0, help="rollout processes; 0 = all cores")
    parser.add_argument("--out", default="/tmp/rlmtl_bench_eval", help="folder for the checkpoint and results")
    args = parser.parse_args()

    from rlmtl.evaluation.evaluate import evaluate_checkpoint
    from rlmtl.evaluation.settings import EvalSettings
    from rlmtl.pool import resolve_workers

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = small_checkpoint(out, args.tasks)
    cores = len(os.sched_getaffinity(0))
    before = sample([os.getpid()])[1][os.getpid()]
    sampler = LoadSampler()
    sampler.start()
    start = time.perf_counter()
    result = evaluate_checkpoint(checkpoint, EvalSettings(episodes_per_task=args.episodes, workers=args.workers, progress=True))
    wall = time.perf_counter() - start
    sampler.stopped.set()
    sampler.join()
    cpu = sum(sampler.cpu.values()) - before
    assert result is not None
    steps = sum(row["steps"] for row in result["episodes"])
    report = {
        "tasks": args.tasks,
        "episodes": result["overall"]["episodes"],
        "errors": result["overall"]["errors"],
        "env_steps": steps,
        "workers": resolve_workers(args.workers),
        "cores": cores,
        "wall_s": round(wall, 1),
        "steps_per_s": round(steps / wall, 1),
        "peak_rss_mib_parent_plus_workers": round(sampler.peak_rss / 2**20, 1),
        "peak_processes": sampler.peak_processes,
        "cpu_s": round(cpu, 1),
        "cpu_utilisation": round(cpu / (wall * cores), 3),
    }
    (out / "bench_eval_load.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
