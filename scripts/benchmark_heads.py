#!/usr/bin/env python
"""What each action head costs against the default `mse` head, side by side in one process,
interleaved in rounds, each round in a rotated order (the median of the per-round ratios is printed):

- a policy call: `act_batch` on a padded evaluation batch (`envs_per_worker` rows of mixed tasks,
  8 by default, as the batched evaluation worker asks for them), under inference mode;
- a training step: `task_losses` of a [K, B] batch, its backward and an AdamW step.

The agents are the main job's (configs/mt10.yaml: MT10's 39-d state and 4-d actions, the MLP
encoder, one head per task) with random weights, which cost what trained ones cost; each head with
its variant's settings in configs/agents/ (the diffusion head's task heads have a hidden layer of
256, as in configs/agents/mt10_diffusion.yaml; `mse_hidden` is the default head with that hidden
layer, which separates what the layer costs from what the 10 sampling steps cost). One torch thread.

    python scripts/benchmark_heads.py [--rounds 15] [--calls 200] [--steps 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from rlmtl.evaluation.settings import EvalSettings

ROOT = Path(__file__).resolve().parents[1]
STATE_DIM, ACTION_DIM, NUM_TASKS = 39, 4, 10
EVAL_ROWS = EvalSettings(episodes_per_task=1).envs_per_worker  # the batched worker's padded policy batch (default)
VARIANTS = {  # head -> the agent overrides of its configs/agents/ variant (mse: the main job)
    "mse": [],
    "mse_hidden": ["agent.head_hidden_dim=256"],  # what a hidden layer in the task heads costs by itself
    "gmm": ["agent.head=gmm"],
    "chunk": ["agent.head=chunk", "agent.head_params={horizon: 4}"],
    "diffusion": ["agent.head=diffusion", "agent.head_hidden_dim=256"],
}


def build_agent(overrides: list[str]) -> torch.nn.Module:
    from rlmtl.agents.bc import MultiTaskBC
    from rlmtl.config import load_config

    config = load_config(str(ROOT / "configs" / "mt10.yaml"), overrides)
    torch.manual_seed(0)
    return MultiTaskBC({"state": (STATE_DIM,)}, ACTION_DIM, NUM_TASKS, config.env.image_size, config.agent)


def policy_call(agent: torch.nn.Module, calls: int) -> float:
    """Seconds per `act_batch` of EVAL_ROWS rows."""
    generator = torch.Generator().manual_seed(1)
    observations = {"state": torch.randn(EVAL_ROWS, STATE_DIM, generator=generator)}
    task_ids = torch.randint(0, agent.num_tasks, (EVAL_ROWS,), generator=generator)
    agent.eval()
    start = time.perf_counter()
    for _ in range(calls):
        agent.act_batch(observations, task_ids)
    return (time.perf_counter() - start) / calls


def training_step(agent: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict, steps: int) -> float:
    """Seconds per training step (losses, backward, AdamW) on `batch`."""
    agent.train()
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        agent.task_losses(batch).sum().backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


def training_batch(agent: torch.nn.Module, batch_per_task: int) -> dict:
    generator = torch.Generator().manual_seed(2)
    k, horizon = agent.num_tasks, agent.action_horizon
    batch = {"obs": {"state": torch.randn(k, batch_per_task, STATE_DIM, generator=generator)}}
    if horizon > 1:
        batch["actions"] = torch.rand(k, batch_per_task, horizon, ACTION_DIM, generator=generator) * 2 - 1
        batch["action_valid"] = torch.ones(k, batch_per_task, horizon, dtype=torch.bool)
    else:
        batch["actions"] = torch.rand(k, batch_per_task, ACTION_DIM, generator=generator) * 2 - 1
    return batch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=200, help="policy calls of each head per round")
    parser.add_argument("--steps", type=int, default=20, help="training steps of each head per round")
    parser.add_argument("--batch-per-task", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    agents = {head: build_agent(overrides) for head, overrides in VARIANTS.items()}
    optimizers = {head: torch.optim.AdamW(agent.parameters(), lr=1e-4) for head, agent in agents.items()}
    batches = {head: training_batch(agent, args.batch_per_task) for head, agent in agents.items()}
    for head, agent in agents.items():  # warm-up
        policy_call(agent, 10)
        training_step(agent, optimizers[head], batches[head], 2)
    calls: dict[str, list[float]] = {head: [] for head in agents}
    steps: dict[str, list[float]] = {head: [] for head in agents}
    names = list(agents)
    for round_ in range(args.rounds):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]  # each head in each position in turn
        for head in order:
            calls[head].append(policy_call(agents[head], args.calls))
        for head in order:
            steps[head].append(training_step(agents[head], optimizers[head], batches[head], args.steps))
    print(f"action heads on the main job's agent, 1 thread, {args.rounds} rounds (medians; ratio = median of per-round ratios to mse)")
    print(f"{'head':<10} {f'policy call ({EVAL_ROWS} rows)':>22} {'x mse':>7} {'training step':>15} {'x mse':>7}")
    for head in agents:
        call_ratio = statistics.median(c / m for c, m in zip(calls[head], calls["mse"]))
        step_ratio = statistics.median(s / m for s, m in zip(steps[head], steps["mse"]))
        call_us, step_ms = statistics.median(calls[head]) * 1e6, statistics.median(steps[head]) * 1e3
        print(f"{head:<10} {call_us:>19.0f} us {call_ratio:>6.2f}x {step_ms:>12.2f} ms {step_ratio:>6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
