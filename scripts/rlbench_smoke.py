"""Smoke check of the RLBench image: one task, one evaluation episode, camera frames must not be black.

Launches CoppeliaSim headless through rlmtl's backend, resets `reach_target`, checks that every
configured camera renders a non-black frame (QT_QPA_PLATFORM=offscreen or a missing GLX renders
all-black frames silently), records one live demo with RLBench's planner and evaluates one episode
that replays the demo's keyframe actions through rlmtl's episode loop. Prints a JSON summary; exit
status 1 when frames are black or the episode could not run.

    python scripts/rlbench_smoke.py [--task reach_target] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="reach_target")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cameras", default="front,wrist")
    args = parser.parse_args(argv)

    from rlmtl.envs import EnvSettings, make_suite
    from rlmtl.envs.rlbench_backend import RLBenchOptions
    from rlmtl.evaluation.rollout import run_episode

    cameras = tuple(c for c in args.cameras.split(",") if c)
    settings = EnvSettings(
        "rlbench", "rlbench10", args.task, cameras=cameras, image_size=128, options=RLBenchOptions(action_mode="keyframe")
    )
    suite = make_suite("rlbench", "rlbench10")
    start = time.perf_counter()
    env = suite.make_env(settings)
    try:
        observation, _ = env.reset(seed=args.seed)
        frames = {camera: observation[f"rgb_{camera}"] for camera in cameras}
        black = [camera for camera, image in frames.items() if int(image.max()) == 0]
        demo = suite.record_demo(env, scene_seed=args.seed, attempt=0)
        if demo is None:
            print(json.dumps({"task": args.task, "error": "RLBench could not record a demo"}))
            return 1
        keyframes = [a for i, a in enumerate(demo.actions) if i == 0 or not np.allclose(a, demo.actions[i - 1])]
        queue = list(keyframes)
        outcome, _ = run_episode(env, lambda obs: queue.pop(0) if queue else keyframes[-1], scene_seed=args.seed)
    finally:
        env.close()
    summary = {
        "task": args.task,
        "frame_mean": {camera: float(image.mean()) for camera, image in frames.items()},
        "black_cameras": black,
        "demo_steps": demo.length,
        "episode": {"success": outcome.success, "steps": outcome.steps, "failure": getattr(outcome, "failure", "")},
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(summary, indent=2))
    if black:
        print(
            f"rlbench smoke: all-black frames from {', '.join(black)} (check Xvfb +extension GLX and QT_QPA_PLATFORM=xcb)", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
