"""One episode of any policy (a scripted expert or the trained agent) in a `TaskEnv`.

Success follows Meta-World's convention: the task solved at any step; the episode stops at the
first success or at the env's step limit. A demo may go on for `steps_after_success` more steps
(within the limit), so that it shows the solved state held (`data.steps_after_success`). A simulator failure ends it too: `step` may set
`info["failure"] = "<kind>"` (e.g. RLBench's IK error); the outcome records that kind, or
`step_limit` for an unsolved episode that ran to the limit.

Only finite rollouts count: a policy action with a NaN or inf ends the episode before it reaches
the simulator (failure `nonfinite_action`; clipping passes NaN through, and Meta-World then reports
some tasks solved), and so does an observation with one (`nonfinite_observation`), even on a step
the env called a success.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Generator

import numpy as np

from rlmtl.data.dataset import Episode
from rlmtl.envs.base import Observation, TaskEnv

Policy = Callable[[Observation], np.ndarray]


NONFINITE_ACTION = "nonfinite_action"
NONFINITE_OBSERVATION = "nonfinite_observation"


def _finite(observation: Observation) -> bool:
    """Every floating-point array of the observation is free of NaN and inf (images are uint8)."""
    for value in observation.values():
        value = np.asarray(value)
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            return False
    return True


@dataclass
class EpisodeOutcome:
    """What an evaluation needs from one episode."""

    success: bool
    steps: int
    scene_seed: int
    frames: list[np.ndarray] = field(default_factory=list)
    failure: str = ""  # why an unsolved episode ended: the env's info["failure"] or "step_limit"


def run_episode(
    env: TaskEnv, policy: Policy, scene_seed: int, record: bool = False, video: bool = False, steps_after_success: int = 0
) -> tuple[EpisodeOutcome, Episode | None]:
    """Roll `policy` out from scene `scene_seed`; optionally record the steps and video frames."""
    steps = rollout(env, scene_seed, record, video, steps_after_success)
    try:
        observation = next(steps)
        while True:
            observation = steps.send(policy(observation))
    except StopIteration as done:
        return done.value


def rollout(
    env: TaskEnv, scene_seed: int, record: bool = False, video: bool = False, steps_after_success: int = 0
) -> Generator[Observation, np.ndarray, tuple[EpisodeOutcome, Episode | None]]:
    """One episode from scene `scene_seed`, driven from outside: it yields each observation the
    policy must act on and receives the action [A]; it returns (outcome, the recorded episode or
    None). `run_episode` drives it with a policy function; batched evaluation drives several at
    once and answers them with one policy call. After the first success it goes on for
    `steps_after_success` steps (or to the step limit, or a failure); the outcome stays a success."""
    observation, _ = env.reset(seed=scene_seed)
    steps: dict[str, list[np.ndarray]] = {key: [] for key in observation} if record else {}
    actions: list[np.ndarray] = []
    rewards: list[float] = []
    successes: list[bool] = []
    frames: list[np.ndarray] = [env.render()] if video else []
    success = False
    truncated = False
    failure = "" if _finite(observation) else NONFINITE_OBSERVATION
    step = 0
    solved_at = -1  # the step of the first success
    while not (truncated or failure or (solved_at >= 0 and step - solved_at >= steps_after_success)):
        action = np.asarray((yield observation), dtype=np.float32)
        if not np.isfinite(action).all():
            failure = NONFINITE_ACTION
            break
        if record:
            for key, value in observation.items():
                steps[key].append(value)
            actions.append(action)
        observation, reward, success, truncated, info = env.step(action)
        failure = "" if success else str(info.get("failure") or "")
        if not _finite(observation):
            success, failure = False, NONFINITE_OBSERVATION
        step += 1
        if success and solved_at < 0:
            solved_at = step
        if record:
            rewards.append(reward)
            successes.append(success)
        if video:
            frames.append(env.render())
    solved = solved_at >= 0 and not failure
    if not solved and not failure:
        failure = "step_limit"
    outcome = EpisodeOutcome(success=solved, steps=step, scene_seed=scene_seed, frames=frames, failure=failure)
    if not record:
        return outcome, None
    episode = Episode(
        observations={key: np.stack(values) for key, values in steps.items()},
        actions=np.stack(actions),
        rewards=np.asarray(rewards, dtype=np.float32),
        success=np.asarray(successes, dtype=bool),
        scene_seed=scene_seed,
        attempt=-1,
    )
    return outcome, episode
