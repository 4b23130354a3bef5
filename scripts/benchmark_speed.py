#!/usr/bin/env python
"""rlmtl's overhead, each part measured side by side with the plain code it stands for, in one
process, interleaved in rounds (the median of the per-round ratios is printed):

- train: rlmtl's training step (`Trainer.train_step` on CONFIG, default configs/mt10.yaml) against
  a plain PyTorch loop of the same model written here without rlmtl: the same MLP on the state and
  a one-hot task id, K linear heads as one batched matmul, per-task MSE of tanh outputs against
  actions scaled to [-1, 1], fused AdamW, gradient clipping, batches drawn from the same tensors;
  printed twice: rlmtl at the config's settings (its gradient-conflict diagnostics on, every
  `diagnostics.every` steps: rounds of 100 steps hold one measurement each) and with them off (the
  plain loop's work exactly);
- eval: `evaluate_checkpoint` with 1 worker against a bare loop in this process over the same
  tasks, scene seeds and steps (each env built once, then `reset` and the raw Meta-World
  `env.step` replaying the actions the policy took, recorded beforehand and not timed); then 2
  workers against 1 (the env steps per second of each, the worker start-up included);
- eval-parts (only when asked): where the evaluation's time goes beyond the bare loop's, each piece
  timed over the same episodes in this process: the raw `env.step` in the batched worker's order
  (envs of different tasks in turn), plus rlmtl's env wrapper and rollout, plus the policy (the
  worker's loop), and the worker's start-up;
- eval-envs (only when asked): `rlmtl eval` with 1 worker stepping 8, 16 or 32 episodes at once,
  interleaved (the choice of the `eval.envs_per_worker` default);
- eval-calls (only when asked): the policy calls of a 1-worker evaluation with the pool's per-task
  cap over the tasks left, and with the cap over all tasks (the rule before it);
- standalone: `scripts/bench_standalone.py` (the task-gradient methods given a list of losses,
  against uniform, on a `ModuleList` model).

    python scripts/benchmark_speed.py [CONFIG] [--only train,eval,eval-parts,eval-envs,eval-calls,standalone] [--checkpoint RUN_OR_CKPT]
        [--rounds 15] [--train-steps 100] [--eval-episodes 50] [--eval-rounds 2]

The evaluation uses the given checkpoint, else the main job's run folder when it exists, else a
model trained here for 3,000 steps (the episode lengths are then those of that policy).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------- train
class PlainLoop:
    """The plain PyTorch loop of the default agent, on the same data tensors as the trainer."""

    def __init__(self, trainer, seed: int = 0) -> None:
        cfg, agent, flat = trainer.config, trainer.parts.agent, trainer.parts.sampler.flat
        k = len(trainer.parts.tasks)
        torch.manual_seed(seed)
        state_dim = flat.observations["state"].shape[1]
        widths = [state_dim + k] + [cfg.agent.hidden_dim] * cfg.agent.num_layers
        layers: list[torch.nn.Module] = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            layers += [torch.nn.Linear(fan_in, fan_out), torch.nn.ReLU()]
        self.trunk = torch.nn.Sequential(*layers)
        action_dim = flat.actions.shape[1]
        bound = 1 / cfg.agent.hidden_dim**0.5
        self.head_w = torch.nn.Parameter(torch.empty(k, cfg.agent.hidden_dim, action_dim).uniform_(-bound, bound))
        self.head_b = torch.nn.Parameter(torch.empty(k, 1, action_dim).uniform_(-bound, bound))
        self.params = [*self.trunk.parameters(), self.head_w, self.head_b]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay, fused=True)
        self.grad_clip = cfg.train.grad_clip
        self.states, self.actions = flat.observations["state"], flat.actions
        self.counts, self.offsets = flat.counts, flat.offsets
        self.mean, self.std = agent.obs_mean[:, None].clone(), agent.obs_std[:, None].clone()
        self.center, self.scale = agent.action_center[:, None].clone(), agent.action_scale[:, None].clone()
        self.onehot = torch.eye(k)
        self.k, self.batch = k, cfg.train.batch_per_task
        self.generator = torch.Generator().manual_seed(seed)

    def step(self) -> torch.Tensor:
        k, b = self.k, self.batch
        rows = (torch.rand(k, b, generator=self.generator, dtype=torch.float64) * self.counts[:, None]).long() + self.offsets[:, None]
        x = torch.cat([(self.states[rows] - self.mean) / self.std, self.onehot[:, None].expand(k, b, k)], dim=-1)
        features = self.trunk(x.reshape(k * b, -1)).reshape(k, b, -1)
        prediction = torch.tanh(torch.baddbmm(self.head_b, features, self.head_w))
        target = ((self.actions[rows] - self.center) / self.scale).clamp(-1, 1)
        losses = (prediction - target).pow(2).mean(dim=(1, 2))
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()
        return losses


def timed(step, steps: int) -> float:
    """Seconds for `steps` calls of `step` (the last result read, so the device has finished)."""
    start = time.perf_counter()
    for _ in range(steps):
        out = step()
    out = out[0] if isinstance(out, tuple) else out
    out.sum().item()
    return time.perf_counter() - start


def bench_train(config, rounds: int, steps: int) -> None:
    """rlmtl's step at the config's settings, and with the gradient-conflict diagnostics off (the plain
    loop's work exactly: it measures no conflict), each against the plain loop, interleaved in rounds."""
    import dataclasses

    from rlmtl.data.collect import collect
    from rlmtl.training.trainer import Trainer

    collect(config, progress=False)
    if config.agent.obs_keys != ["state"] or config.agent.lowdim_encoder != "mlp" or config.agent.head_hidden_dim:
        raise SystemExit("benchmark_speed.py train: the plain loop is written for the state MLP agent with linear heads")
    every = config.diagnostics.every
    without = dataclasses.replace(config, name=config.name + "-nodiag", diagnostics=dataclasses.replace(config.diagnostics, every=0))
    trainers = {"defaults": Trainer(config, progress=False), "no diagnostics": Trainer(without, progress=False)}
    plain = PlainLoop(trainers["defaults"], config.train.seed)
    sides = {**{name: trainer.train_step for name, trainer in trainers.items()}, "plain": plain.step}
    for _ in range(20):  # warm-up
        for step in sides.values():
            step()
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for index in range(rounds):  # the order rotates, so no side always runs on a cache another warmed
        for name in names[index % len(names) :] + names[: index % len(names)]:
            seconds[name].append(timed(sides[name], steps))
    for trainer in trainers.values():
        trainer.release()
    plain_rate = statistics.median(steps / t for t in seconds["plain"])
    for name in trainers:
        ratios = [theirs / mine for theirs, mine in zip(seconds["plain"], seconds[name])]
        what = f"diagnostics every {every} steps" if name == "defaults" and every else "no gradient-conflict diagnostics"
        print(
            f"training step ({what}): rlmtl {statistics.median(steps / t for t in seconds[name]):.0f} steps/s, plain loop {plain_rate:.0f} steps/s: "
            f"{statistics.median(ratios):.2f}x the plain loop's throughput (median of {rounds} rounds of {steps} steps, "
            f"range {min(ratios):.2f}-{max(ratios):.2f}; batch {config.train.batch_per_task}x{len(trainers[name].parts.tasks)}, "
            f"{torch.get_num_threads()} torch threads)"
        )


# ---------------------------------------------------------------------------------------- eval
def record_actions(checkpoint: str, episodes: list[dict]) -> list[tuple[dict, np.ndarray]]:
    """Each episode's actions, from the checkpoint's policy in this process (not timed): the policy
    batch is padded as in the workers, so these are the actions `rlmtl eval` took."""
    from rlmtl.build import env_settings
    from rlmtl.config import config_from_dict
    from rlmtl.envs import make_suite
    from rlmtl.evaluation import evaluate as evaluator
    from rlmtl.training.checkpoint import resolve_checkpoint

    evaluator._init_evaluator(str(resolve_checkpoint(checkpoint)), 8, 1)
    config = config_from_dict(evaluator._WORKER["meta"]["config"])
    tasks = evaluator._WORKER["meta"]["tasks"]
    suite = make_suite(config.env.backend, config.env.suite)
    recorded = []
    for row in episodes:
        env = suite.make_env(env_settings(config, row["task"]))
        observation, _ = env.reset(seed=row["scene_seed"])
        actions = []
        for _ in range(row["steps"]):
            actions.append(evaluator._act_for_all([(tasks.index(row["task"]), observation)])[0])
            observation = env.step(actions[-1])[0]
        env.close()
        recorded.append((row, np.stack(actions) if actions else np.zeros((0, 4), np.float32)))
    evaluator._close_evaluator()
    return recorded


def bare_env_loop(checkpoint: str, recorded: list[tuple[dict, np.ndarray]], compile_models: bool = True) -> float:
    """Seconds to build each task's env once and replay every episode's actions with the raw
    Meta-World `env.step` (after rlmtl's seeded `reset`): the simulator's work alone. With
    `compile_models`, each task's model is compiled as Meta-World's own constructor does (rlmtl's
    per-process model cache is not the simulator's; an evaluation worker compiles them too)."""
    from rlmtl.build import env_settings
    from rlmtl.config import config_from_dict
    from rlmtl.envs import make_suite
    from rlmtl.training.checkpoint import load_checkpoint, resolve_checkpoint

    config = config_from_dict(load_checkpoint(resolve_checkpoint(checkpoint))["meta"]["config"])
    suite = make_suite(config.env.backend, config.env.suite)
    if compile_models and config.env.backend == "metaworld":
        # the simulator compiles each task's model when it builds the task's first env, as a
        # worker does: forget the models this process compiled for earlier parts
        from rlmtl.envs import metaworld_backend

        metaworld_backend._COMPILED.clear()
    start = time.perf_counter()
    envs = {}
    for row, actions in recorded:
        env = envs.get(row["task"])
        if env is None:
            env = envs[row["task"]] = suite.make_env(env_settings(config, row["task"]))
        env.reset(seed=row["scene_seed"])
        raw = env._env  # the Meta-World env under rlmtl's wrapper
        for action in np.clip(actions.astype(np.float64), -1.0, 1.0):
            raw.step(action)
    elapsed = time.perf_counter() - start
    for env in envs.values():
        env.close()
    return elapsed


def rlmtl_eval(checkpoint: str, episodes_per_task: int, workers: int, envs_per_worker: int | None = None) -> tuple[float, list[dict]]:
    """Seconds of `evaluate_checkpoint` (envs per worker: the default's when None) and its episodes."""
    from rlmtl.evaluation.evaluate import evaluate_checkpoint
    from rlmtl.evaluation.settings import EvalSettings

    batching = {} if envs_per_worker is None else {"envs_per_worker": envs_per_worker}
    start = time.perf_counter()
    result = evaluate_checkpoint(checkpoint, EvalSettings(episodes_per_task=episodes_per_task, workers=workers, progress=False, **batching))
    assert result is not None
    return time.perf_counter() - start, result["episodes"]


def bench_eval(checkpoint: str, episodes_per_task: int, rounds: int) -> None:
    vs_bare, vs_one, rates = [], [], {"bare": [], 1: [], 2: []}
    recorded = None
    for _ in range(rounds):
        one, episodes = rlmtl_eval(checkpoint, episodes_per_task, 1)
        steps = sum(row["steps"] for row in episodes)
        recorded = recorded or record_actions(checkpoint, episodes)
        bare = bare_env_loop(checkpoint, recorded)
        two, _ = rlmtl_eval(checkpoint, episodes_per_task, 2)
        vs_bare.append(bare / one)
        vs_one.append(one / two)
        for key, seconds in (("bare", bare), (1, one), (2, two)):
            rates[key].append(steps / seconds)
    median = {key: statistics.median(values) for key, values in rates.items()}
    print(
        f"evaluation ({checkpoint}, {episodes_per_task} episodes per task, {steps:,} env steps): 1 worker {median[1]:,.0f} env steps/s, "
        f"bare env.step loop {median['bare']:,.0f} steps/s: {statistics.median(vs_bare):.2f}x the bare loop "
        f"(range {min(vs_bare):.2f}-{max(vs_bare):.2f}); 2 workers {median[2]:,.0f} steps/s: {statistics.median(vs_one):.2f}x 1 worker "
        f"(range {min(vs_one):.2f}-{max(vs_one):.2f}; median of {rounds} rounds, worker start-up included)"
    )


def worker_schedule(recorded: list[tuple[dict, np.ndarray]], envs_per_worker: int) -> list[list[tuple[int, int]]]:
    """The rounds (one per policy call) of (episode index, step) in which one batched worker steps
    the episodes: up to `envs_per_worker` episodes of different tasks at once, a finished one
    replaced by the next episode of a task not running (as `_Pending.take_for_batch` hands them
    when there are more tasks than envs)."""
    pending = list(range(len(recorded)))
    running: list[tuple[int, int]] = []
    rounds: list[list[tuple[int, int]]] = []
    while pending or running:
        while len(running) < envs_per_worker:
            busy = {recorded[index][0]["task"] for index, _ in running}
            chosen = next((index for index in pending if recorded[index][0]["task"] not in busy), None)
            if chosen is None:
                break
            pending.remove(chosen)
            running.append((chosen, 0))
        rounds.append(running)
        running = [(index, step + 1) for index, step in running if step + 1 < len(recorded[index][1])]
    return rounds


class EvalParts:
    """The pieces between the bare loop and `rlmtl eval`, each timed over the same episodes in this
    process (no worker): the raw `env.step` one episode after another (the bare loop) and in the
    batched worker's order, rlmtl's env wrapper and rollout in that order (recorded actions, no
    policy), and the whole batched loop with the policy."""

    def __init__(self, checkpoint: str, recorded: list[tuple[dict, np.ndarray]], envs_per_worker: int) -> None:
        from rlmtl.build import env_settings
        from rlmtl.config import config_from_dict
        from rlmtl.envs import make_suite
        from rlmtl.evaluation import evaluate as evaluator
        from rlmtl.training.checkpoint import resolve_checkpoint

        self.evaluator = evaluator
        evaluator._init_evaluator(str(resolve_checkpoint(checkpoint)), envs_per_worker, envs_per_worker)
        config = config_from_dict(evaluator._WORKER["meta"]["config"])
        self.tasks = evaluator._WORKER["meta"]["tasks"]
        suite = make_suite(config.env.backend, config.env.suite)
        self.recorded = recorded
        self.settings = {row["task"]: env_settings(config, row["task"]) for row, _ in recorded}
        self.envs = {task: suite.make_env(settings) for task, settings in self.settings.items()}  # built before timing
        self.rounds = worker_schedule(recorded, envs_per_worker)
        self.order = [entry for batch in self.rounds for entry in batch]

    def bare_in_turn(self) -> float:
        """The raw `env.step` in the batched worker's order: envs of different tasks in turn."""
        start = time.perf_counter()
        for index, step in self.order:
            row, actions = self.recorded[index]
            env = self.envs[row["task"]]
            if step == 0:
                env.reset(seed=row["scene_seed"])
            env._env.step(np.clip(actions[step].astype(np.float64), -1.0, 1.0))
        return time.perf_counter() - start

    def wrapper_in_turn(self) -> float:
        """rlmtl's env wrapper and rollout (finiteness checks, observation dicts), same order, no policy."""
        from rlmtl.evaluation.rollout import rollout

        running = {}
        start = time.perf_counter()
        for index, step in self.order:
            row, actions = self.recorded[index]
            if step == 0:
                running[index] = rollout(self.envs[row["task"]], row["scene_seed"])
                next(running[index])
            try:
                running[index].send(actions[step])
            except StopIteration:
                del running[index]
        return time.perf_counter() - start

    def batched_loop(self) -> float:
        """The worker's loop in this process, in the same rounds: `_episode_job` generators answered
        by one `_act_for_all` call per round."""
        evaluator = self.evaluator
        running: dict[int, Any] = {}
        requests: dict[int, Any] = {}
        start = time.perf_counter()
        for batch in self.rounds:
            for index, step in batch:
                if step == 0:
                    row = self.recorded[index][0]
                    running[index] = evaluator._episode_job(self.settings[row["task"]], self.tasks.index(row["task"]), row["scene_seed"], False)
                    requests[index] = next(running[index])
            answers = evaluator._act_for_all([requests[index] for index, _ in batch])
            for (index, _), answer in zip(batch, answers):
                try:
                    requests[index] = running[index].send(answer)
                except StopIteration:
                    del running[index], requests[index]
        return time.perf_counter() - start

    def close(self) -> None:
        self.evaluator._close_evaluator()
        for env in self.envs.values():
            env.close()


def worker_start_seconds(checkpoint: str) -> float:
    """Seconds from starting a 1-worker evaluation pool to its first answer (spawn, imports, agent)."""
    from rlmtl.evaluation import evaluate as evaluator
    from rlmtl.pool import Job, RobustPool
    from rlmtl.training.checkpoint import resolve_checkpoint

    start = time.perf_counter()
    with RobustPool(1, evaluator._init_evaluator, (str(resolve_checkpoint(checkpoint)), 8, 8), finalizer=evaluator._close_evaluator) as pool:
        list(pool.run([Job("start", time.monotonic, ())]))
        return time.perf_counter() - start


def bench_eval_parts(checkpoint: str, episodes_per_task: int, rounds: int) -> None:
    """Where `rlmtl eval`'s time goes beyond the bare loop's, piece by piece (see `EvalParts`)."""
    from rlmtl.config import config_from_dict
    from rlmtl.training.checkpoint import load_checkpoint, resolve_checkpoint

    _, episodes = rlmtl_eval(checkpoint, episodes_per_task, 1)
    recorded = record_actions(checkpoint, episodes)
    steps = sum(len(actions) for _, actions in recorded)
    config = config_from_dict(load_checkpoint(resolve_checkpoint(checkpoint))["meta"]["config"])
    parts = EvalParts(checkpoint, recorded, config.eval.envs_per_worker)
    # the other pieces' envs are built before timing; the bare loop builds its own from the models
    # this process compiled already (a copy per task, about 15 ms each)
    pieces = {"bare loop": lambda: bare_env_loop(checkpoint, recorded, compile_models=False), "bare, envs in turn": parts.bare_in_turn,
              "+ env wrapper and rollout": parts.wrapper_in_turn, "+ policy (the worker's loop)": parts.batched_loop}
    seconds: dict[str, list[float]] = {name: [] for name in pieces}
    starts = []
    for index in range(rounds):
        for name in (list(pieces) if index % 2 == 0 else list(pieces)[::-1]):
            seconds[name].append(pieces[name]())
        starts.append(worker_start_seconds(checkpoint))
    parts.close()
    bare = statistics.median(seconds["bare loop"])
    print(f"evaluation, piece by piece ({checkpoint}, {episodes_per_task} episodes per task, {steps:,} env steps, "
          f"{config.eval.envs_per_worker} envs per worker, one process, median of {rounds} rounds):")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"  {name:30s} {median:6.2f} s  {bare / median:.2f}x the bare loop")
    print(f"  {'worker start-up':30s} {statistics.median(starts):6.2f} s  (spawn, imports, agent: once per worker per evaluation)")


def bench_eval_envs(checkpoint: str, episodes_per_task: int, rounds: int, choices: tuple[int, ...] = (8, 16, 32)) -> None:
    """`rlmtl eval` with 1 worker stepping E episodes at once, for each E in `choices`, interleaved in
    rounds: seconds and the ratio to the first E (the policy is called once per step for all E, and
    every env a worker steps in turn evicts the others' simulator data from the cache)."""
    seconds: dict[int, list[float]] = {envs: [] for envs in choices}
    successes: dict[int, set[int]] = {envs: set() for envs in choices}
    for index in range(rounds):
        for envs in choices if index % 2 == 0 else choices[::-1]:
            elapsed, episodes = rlmtl_eval(checkpoint, episodes_per_task, 1, envs)
            seconds[envs].append(elapsed)
            successes[envs].add(sum(row["success"] for row in episodes))
    first = statistics.median(seconds[choices[0]])
    print(f"evaluation, envs per worker ({checkpoint}, {episodes_per_task} episodes per task, 1 worker, median of {rounds} rounds):")
    for envs in choices:
        median = statistics.median(seconds[envs])
        print(f"  {envs:3d} envs per worker {median:6.1f} s  {first / median:.2f}x the speed of {choices[0]}  successes {sorted(successes[envs])}")


CALLS_FILE_ENV = "RLMTL_BENCH_POLICY_CALLS"


def counting_service(requests):
    """The evaluator's policy service, appending each call's batch size to $RLMTL_BENCH_POLICY_CALLS
    (runs in the rollout worker, which imports this script as its main module)."""
    import os

    from rlmtl.evaluation.evaluate import _act_for_all

    with open(os.environ[CALLS_FILE_ENV], "a") as calls:
        calls.write(f"{len(requests)}\n")
    return _act_for_all(requests)


def bench_eval_calls(checkpoint: str, episodes_per_task: int) -> None:
    """Policy calls of a 1-worker evaluation: with the pool's per-task cap over the tasks left, and
    with the cap over all tasks (the rule before it), set in this process where the pool schedules."""
    import os

    from rlmtl import pool
    from rlmtl.evaluation import evaluate as evaluator
    from rlmtl.training.checkpoint import load_checkpoint, resolve_checkpoint

    tasks = load_checkpoint(resolve_checkpoint(checkpoint))["meta"]["tasks"]
    real_service, real_cap = evaluator._act_for_all, pool._Pending.group_cap
    counts = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rule in ("the tasks left", "all tasks"):
            path = Path(tmp) / rule.replace(" ", "-")
            os.environ[CALLS_FILE_ENV] = str(path)
            evaluator._act_for_all = counting_service
            if rule == "all tasks":
                pool._Pending.group_cap = lambda self, running, places: -(-places // len(tasks))
            try:
                _, episodes = rlmtl_eval(checkpoint, episodes_per_task, 1)
            finally:
                evaluator._act_for_all, pool._Pending.group_cap = real_service, real_cap
            sizes = [int(line) for line in path.read_text().split()]
            counts[rule] = (len(sizes), sum(sizes), sum(row["success"] for row in episodes))
    for rule, (calls, steps, successes) in counts.items():
        print(f"policy calls, per-task cap over {rule}: {calls:,} calls for {steps:,} env steps ({steps / calls:.2f} episodes per call), {successes} successes")


def eval_checkpoint(config_path: str, given: str | None, folder: Path) -> str:
    from rlmtl.config import load_config
    from rlmtl.training.trainer import train

    if given:
        return given
    main_run = ROOT / "runs" / "mt10-uniform-seed0"
    if (main_run / "checkpoints" / "last").is_file():
        return str(main_run)
    config = load_config(config_path, [f"out_dir={folder / 'runs'}", "name=bench-eval", "train.steps=3000", "train.checkpoint_every=3000"])
    return str(train(config, progress=False).run_dir)


def main() -> int:
    from rlmtl.config import load_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default=str(ROOT / "configs" / "mt10.yaml"))
    parser.add_argument("--only", default="train,eval,standalone", help="comma-separated parts: train, eval, eval-parts, eval-envs, eval-calls, standalone")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--rounds", type=int, default=15, help="rounds of the training comparison")
    parser.add_argument("--train-steps", type=int, default=100, help="steps of each side per round (the default: one diagnostics interval)")
    parser.add_argument("--eval-episodes", type=int, default=50, help="per task")
    parser.add_argument("--eval-rounds", type=int, default=2)
    parser.add_argument("--eval-parts-rounds", type=int, default=3, help="rounds of eval-parts (not run by default)")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    unknown = parts - {"train", "eval", "eval-parts", "eval-envs", "eval-calls", "standalone"}
    if unknown:
        parser.error(f"--only: unknown part(s) {sorted(unknown)}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = load_config(args.config, [f"out_dir={folder / 'runs'}", "name=bench-speed"])
        if "train" in parts:
            bench_train(config, args.rounds, args.train_steps)
        if parts & {"eval", "eval-calls", "eval-parts", "eval-envs"}:  # one checkpoint (trained here at most once) for every eval part
            checkpoint = eval_checkpoint(args.config, args.checkpoint, folder)
        if "eval" in parts:
            bench_eval(checkpoint, args.eval_episodes, args.eval_rounds)
        if "eval-envs" in parts:
            bench_eval_envs(checkpoint, args.eval_episodes, args.eval_rounds)
        if "eval-calls" in parts:
            bench_eval_calls(checkpoint, args.eval_episodes)
        if "eval-parts" in parts:
            bench_eval_parts(checkpoint, args.eval_episodes, args.eval_parts_rounds)
    if "standalone" in parts:
        sys.path.insert(0, str(ROOT / "scripts"))
        import bench_standalone

        sys.argv = [sys.argv[0]]
        return bench_standalone.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
