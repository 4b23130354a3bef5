#!/usr/bin/env python
"""How near reach-v3's failed evaluation episodes came: replays each failed reach-v3 episode of a
run's evaluation log (`eval_episodes.jsonl`) with the run's checkpoint and prints its closest
approach, as Meta-World measures success and as the policy sees the hand.

Meta-World's reach-v3 succeeds when `tcp_center` (between the finger pads) is within 0.05 of the
goal (metaworld/envs/sawyer_reach_v3.py, `evaluate_state`), but the observation's hand position
(state[0:3]) is the hand body, about 0.045 above the tcp; its scripted expert drives that hand
position onto the goal. Replayed actions come from the same padded policy call the evaluator
makes (EvalSettings' `envs_per_worker` rows), so each replay repeats the logged episode (the
script checks the outcome).

    python scripts/reach_misses.py runs/mt10-uniform-seed0 [--checkpoint PATH] [--task reach-v3]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch



def closest_approach(env, agent, task_index: int, seed: int, rows: int) -> tuple[bool, np.ndarray, np.ndarray]:
    """(success, tcp - goal, hand - goal) at the step where the tcp came nearest the goal; the policy
    asked with `rows` copies of the observation, as the evaluator pads its batches."""
    raw = env._env  # Meta-World's env: tcp_center and _target_pos are what success is measured on
    observation, _ = env.reset(seed=seed)
    best, success = (np.inf, None, None), False
    for _ in range(env.max_episode_steps):
        state = torch.as_tensor(np.stack([observation["state"]] * rows))
        action = agent.act_batch({"state": state}, torch.full((rows,), task_index))[0].numpy()
        observation, _, terminated, truncated, info = env.step(action)
        success = success or bool(info["success"])
        tcp_offset = raw.tcp_center - raw._target_pos
        if np.linalg.norm(tcp_offset) < best[0]:
            hand_offset = observation["state"][:3].astype(np.float64) - observation["state"][36:39]
            best = (np.linalg.norm(tcp_offset), tcp_offset.copy(), hand_offset)
        if terminated or truncated:
            break
    return success, best[1], best[2]


def main() -> int:
    from rlmtl.build import agent_from_checkpoint
    from rlmtl.envs.base import EnvSettings
    from rlmtl.envs.metaworld_backend import MetaWorldTaskEnv
    from rlmtl.evaluation.settings import EvalSettings
    from rlmtl.training.checkpoint import load_checkpoint

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder with eval_episodes.jsonl")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the run's newest step_*.pt")
    parser.add_argument("--task", default="reach-v3")
    args = parser.parse_args()
    torch.set_num_threads(1)
    checkpoint = args.checkpoint or sorted((args.run / "checkpoints").glob("step_*.pt"))[-1]
    payload = load_checkpoint(checkpoint)
    agent = agent_from_checkpoint(payload).eval()
    task_index = payload["meta"]["tasks"].index(args.task)
    records = [json.loads(line) for line in (args.run / "eval_episodes.jsonl").read_text().splitlines() if line.strip()]
    failed = [r for r in records if r["task"] == args.task and not r["success"]]
    env = MetaWorldTaskEnv(EnvSettings("metaworld", payload["meta"]["config"]["env"]["suite"], args.task))
    print(f"{args.task}: {len(failed)} failed episodes of {sum(r['task'] == args.task for r in records)} in {args.run} ({checkpoint.name})")
    print("| scene seed | replay succeeded | closest |tcp - goal| | tcp - goal (x, y, z) | hand - goal (x, y, z) |")
    print("|---|---|---|---|---|")
    distances, hand_offsets, hand_above_tcp = [], [], []
    for record in failed:
        success, tcp, hand = closest_approach(env, agent, task_index, record["scene_seed"], EvalSettings(episodes_per_task=1).envs_per_worker)
        distances.append(np.linalg.norm(tcp))
        hand_offsets.append(np.linalg.norm(hand))
        hand_above_tcp.append(hand - tcp)
        print(f"| {record['scene_seed']} | {success} | {distances[-1]:.3f} | {np.round(tcp, 3).tolist()} | {np.round(hand, 3).tolist()} |")
    if failed:
        print(f"closest tcp distance {min(distances):.3f}-{max(distances):.3f} (success needs <= 0.050); "
              f"the hand then {min(hand_offsets):.3f}-{max(hand_offsets):.3f} from the goal; "
              f"hand - tcp {np.round(np.mean(hand_above_tcp, axis=0), 3).tolist()} (mean)")
    env.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
