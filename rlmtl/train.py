"""`rlmtl train`: task-balanced batches -> K losses -> weighting -> AdamW -> checkpoints -> evaluation.

The loop keeps everything on the device: losses, weights and their running sums are tensors, and
the host reads them only every `train.log_every` steps (one `.cpu()` of a [2K+1] vector).

Under `torchrun` (rlmtl/distributed.py) every rank draws its slice of the same global batch, the
engine averages losses and gradients over ranks, and rank 0 alone logs, checkpoints and
evaluates while the others wait for it.

Non-finite steps: the engine flags a NaN/inf loss or gradient on the device (`found_inf`); the
fused AdamW skips that step (as under a GradScaler), the weighting's state is put back, and
`NonFiniteMonitor` counts it. The host reads the counters at log and checkpoint time only; after
`train.max_nonfinite_steps` skipped steps in a row the run stops naming the tasks and the step.
Skipped steps still count towards `train.steps` (the schedule moves on).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm import tqdm

from envs import make_suite
from rlmtl.affinity import AffinityProbe
from rlmtl.atomic import write_text_atomic
from rlmtl.build import agent_backward, agent_meta, build_agent, resolve_device
from rlmtl.checkpoint import load_checkpoint, prune_checkpoints, resolve_last, save_checkpoint, update_last_pointer
from rlmtl.config import RunConfig, config_to_dict, dataset_path
from rlmtl.data.dataset import load_dataset, read_attrs
from rlmtl.data.sampler import TaskBalancedSampler
from rlmtl.distributed import Ranks, shutdown
from rlmtl.errors import CheckpointError, ConfigError, DatasetError, RlmtlError
from rlmtl.schedule import make_scheduler
from rlmtl.weighting import MultiTaskBackward, make_weighting

METRICS_FILE = "metrics.jsonl"


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    last_checkpoint: Path
    best_checkpoint: Path | None
    best_success: float | None


def prepare_run_dir(config: RunConfig, resume: bool, write: bool = True) -> Path:
    """Create the run folder (checking it is writable); with `write=False` (ranks other than 0)
    only check that the run may start. The Trainer saves config.yaml once a resume is accepted."""
    run_dir = config.run_dir
    if not write:
        if not resume and resolve_last(run_dir / "checkpoints") is not None:
            raise RlmtlError(f"{run_dir}: already holds a training run; pass --resume to continue it or set name=<new name>")
        return run_dir
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / ".write-test", "ok\n")
        (run_dir / ".write-test").unlink()
    except OSError as error:
        raise RlmtlError(f"{run_dir}: run folder is not writable ({error.strerror or error})") from None
    if not resume and resolve_last(run_dir / "checkpoints") is not None:
        raise RlmtlError(f"{run_dir}: already holds a training run; pass --resume to continue it or set name=<new name>")
    return run_dir


def check_dataset_matches(config: RunConfig, attrs: dict[str, Any], path: Path, tasks: list[str], suite: Any = None) -> None:
    """The dataset must come from the configured backend and suite, hold every task, and (given
    the suite) have the observation and action shapes the suite's environments produce."""
    for key, expected in (("backend", config.env.backend), ("suite", config.env.suite)):
        if attrs.get(key) != expected:
            raise DatasetError(f"{path}: dataset {key} is {attrs.get(key)!r} but the config asks for {expected!r}")
    missing = [t for t in tasks if t not in attrs["tasks"]]
    if missing:
        raise DatasetError(f"{path}: dataset has no task(s) {missing} (dataset tasks: {', '.join(attrs['tasks'])})")
    spec = attrs["observation_spec"]
    absent = [k for k in config.agent.obs_keys if k not in spec]
    if absent:
        raise DatasetError(f"{path}: dataset has no observation key(s) {absent} (keys: {', '.join(spec)})")
    if suite is None:
        return
    expected = suite.observation_spec(list(config.env.cameras), config.env.image_size)
    for key in config.agent.obs_keys:
        if key in expected and tuple(spec[key]["shape"]) != tuple(expected[key].shape):
            raise DatasetError(
                f"{path}: observation {key!r} has shape {tuple(spec[key]['shape'])} but {config.env.suite} produces {tuple(expected[key].shape)}"
            )
    action = tuple(attrs["action_spec"]["shape"])
    if action != tuple(suite.action_spec().shape):
        raise DatasetError(f"{path}: actions have shape {action} but {config.env.suite} takes {tuple(suite.action_spec().shape)}")


class NonFiniteMonitor:
    """Device-side counters of skipped (non-finite) steps; `check` reads them (a host sync).

    `record` costs a few tiny device ops per step: the current streak of skipped steps, the tasks
    whose loss was non-finite during it, and the first streak that reached `limit`."""

    def __init__(self, num_tasks: int, limit: int, device: torch.device) -> None:
        self.limit = limit
        self.streak = torch.zeros((), dtype=torch.long, device=device)
        self.streak_tasks = torch.zeros(num_tasks, dtype=torch.bool, device=device)
        self.skipped = torch.zeros((), dtype=torch.long, device=device)  # since the last `take_skipped`
        self.tripped = torch.zeros((), dtype=torch.bool, device=device)
        self.tripped_step = torch.zeros((), dtype=torch.long, device=device)
        self.tripped_tasks = torch.zeros(num_tasks, dtype=torch.bool, device=device)

    def record(self, bad: torch.Tensor, nonfinite_tasks: torch.Tensor, step: int) -> None:
        """`bad`: 0-dim bool, this step was skipped; `nonfinite_tasks` [K] bool; `step` = its number (1-based)."""
        self.streak.copy_(torch.where(bad, self.streak + 1, 0))
        self.streak_tasks.copy_(bad & (self.streak_tasks | nonfinite_tasks))
        self.skipped += bad
        newly = (self.streak >= self.limit) & ~self.tripped
        self.tripped_step.masked_fill_(newly, step)
        self.tripped_tasks.copy_(torch.where(newly, self.streak_tasks, self.tripped_tasks))
        self.tripped |= newly

    def take_skipped(self) -> int:
        """Skipped steps since the last call (host sync)."""
        count = int(self.skipped)
        self.skipped.zero_()
        return count

    def check(self, tasks: list[str]) -> None:
        """Raise RlmtlError if `limit` steps in a row were non-finite (host sync)."""
        if not bool(self.tripped):
            return
        step = int(self.tripped_step)
        names = [t for t, bad in zip(tasks, self.tripped_tasks.tolist()) if bad]
        cause = f"non-finite loss in task(s) {', '.join(names)}" if names else "finite losses but a non-finite gradient"
        raise RlmtlError(
            f"training stopped: steps {step - self.limit + 1}..{step} were all non-finite and skipped "
            f"(train.max_nonfinite_steps={self.limit}): {cause}; check the dataset of those tasks, lower train.lr or raise train.grad_clip"
        )

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"streak": self.streak, "streak_tasks": self.streak_tasks}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.streak.copy_(state["streak"])
        self.streak_tasks.copy_(state["streak_tasks"])


class Trainer:
    """One training run in `config.run_dir`; `run()` trains to `train.steps` (or `stop_after`)."""

    def __init__(self, config: RunConfig, resume: bool = False, progress: bool = True, stop_after: int | None = None) -> None:
        self.config = config
        self.progress = progress
        self.stop_after = stop_after
        self.ranks, self.device = Ranks.from_environment(resolve_device(config.train.device))
        if self.ranks.distributed and config.affinity.probe_every:
            raise ConfigError("affinity.probe_every: the TAG affinity probe runs on one process only (not under torchrun)")
        if config.train.num_threads:
            torch.set_num_threads(config.train.num_threads)
        suite = make_suite(config.env.backend, config.env.suite)
        self.tasks = suite.select_tasks(config.env.tasks)
        path = dataset_path(config)
        attrs = read_attrs(path)
        check_dataset_matches(config, attrs, path, self.tasks, suite)
        self.data = load_dataset(path, self.tasks, config.agent.obs_keys, attrs["action_spec"]["shape"][0])
        with self.ranks.together("preparing the run folder", self.device):
            self.run_dir = prepare_run_dir(config, resume, write=self.ranks.is_main)
        self.ckpt_dir = self.run_dir / "checkpoints"
        torch.manual_seed(config.train.seed)
        self.meta = agent_meta(config, self.tasks, attrs["observation_spec"], attrs["action_spec"]["shape"][0])
        self.meta["dataset"] = {"path": str(path), "fingerprint": attrs.get("fingerprint", "")}
        self.agent = build_agent(self.meta)
        self.agent.set_statistics([t.stats for t in self.data.per_task])
        self.agent.to(self.device)
        # fused: its step takes `found_inf` (skips a non-finite step on the device, no host sync)
        self.optimizer = torch.optim.AdamW(self.agent.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay, fused=True)
        self.scheduler = make_scheduler(self.optimizer, config.train.steps, config.train.warmup_steps, config.train.min_lr_ratio)
        try:
            self.weighting = make_weighting(config.weighting.name, len(self.tasks), config.weighting.params).to(self.device)
            self.balance = self._make_balance()
            self.balance.skip_nonfinite = True
            self.balance.set_reducer(self.ranks)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"weighting {config.weighting.name!r}: {error}") from None
        if config.train.batch_per_task % self.ranks.world_size:
            raise ConfigError(f"train.batch_per_task={config.train.batch_per_task} is not divisible by the {self.ranks.world_size} ranks")
        rank, world = self.ranks.rank, self.ranks.world_size
        keys, batch = config.agent.obs_keys, config.train.batch_per_task
        self.sampler = TaskBalancedSampler(self.data, keys, batch, config.train.seed, self.device, rank, world)
        self.val_sampler = None
        if self.weighting.requirements.val_batch:
            self.val_sampler = TaskBalancedSampler(self.data, keys, batch, config.train.seed + 1, self.device, rank, world)
        self.nonfinite = NonFiniteMonitor(len(self.tasks), config.train.max_nonfinite_steps, self.device)
        self.probe = AffinityProbe(len(self.tasks), config.affinity.divide_by_lr).to(self.device) if config.affinity.probe_every else None
        self.step = 0
        self.best_success: float | None = None
        if resume:
            self._resume()
        if self.ranks.is_main:  # after the resume checks: a refused --resume leaves the run's config alone
            write_text_atomic(self.run_dir / "config.yaml", yaml.safe_dump(config_to_dict(config), sort_keys=False))
        self.ranks.broadcast_([*self.agent.parameters(), *self.weighting.state_dict().values()])  # same start on every rank

    # ------------------------------------------------------------------ checkpoints
    def _payload(self) -> dict[str, Any]:
        return {
            "meta": self.meta,
            "step": self.step,
            "model": self.agent.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "weighting": self.weighting.state_dict(),
            "sampler": self.sampler.state_dict(),
            "val_sampler": self.val_sampler.state_dict() if self.val_sampler else None,
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": self._cuda_rng_states(),
            },
            "nonfinite": self.nonfinite.state_dict(),
            "best_success": self.best_success,
            "affinity_probe": self.probe.state_dict() if self.probe is not None else None,
        }

    def _cuda_rng_states(self) -> list[torch.Tensor]:
        if self.device.type != "cuda":
            return []
        # one process per GPU under torchrun: only this rank's device (the same state on every rank)
        return [torch.cuda.get_rng_state(self.device)] if self.ranks.distributed else torch.cuda.get_rng_state_all()

    def save(self) -> Path:
        """Rank 0 writes the checkpoint; the others wait for it. Returns its path on every rank."""
        self.nonfinite.check(self.tasks)
        path = self.ckpt_dir / f"step_{self.step:08d}.pt"
        with self.ranks.together(f"writing {path}", self.device):
            if self.ranks.is_main:
                save_checkpoint(path, self._payload())
                update_last_pointer(self.ckpt_dir, path)
                prune_checkpoints(self.ckpt_dir, max(1, self.config.train.keep_checkpoints))
        return path

    def _resume(self) -> None:
        last = resolve_last(self.ckpt_dir)
        if last is None:
            raise CheckpointError(f"{self.ckpt_dir}: nothing to resume (no checkpoints/last)")
        payload = load_checkpoint(last, self.device)
        saved = payload["meta"]
        for key in ("tasks", "obs_shapes", "action_dim", "dataset"):
            if saved.get(key) != self.meta.get(key):
                raise CheckpointError(f"{last}: checkpoint {key} {saved.get(key)!r} does not match the config's {self.meta.get(key)!r}")
        for section in ("agent", "weighting"):
            if saved["config"][section] != self.meta["config"][section]:
                raise CheckpointError(f"{last}: checkpoint was trained with another {section} config")
        self.agent.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.weighting.load_state_dict(payload["weighting"])
        self.sampler.load_state_dict(payload["sampler"])
        if self.val_sampler is not None and payload.get("val_sampler"):
            self.val_sampler.load_state_dict(payload["val_sampler"])
        torch.set_rng_state(payload["rng"]["torch"].cpu())
        cuda_states = [s.cpu() for s in payload["rng"]["cuda"]]
        if self.device.type == "cuda" and cuda_states:
            if self.ranks.distributed or len(cuda_states) != torch.cuda.device_count():
                torch.cuda.set_rng_state(cuda_states[0], self.device)
            else:
                torch.cuda.set_rng_state_all(cuda_states)
        if payload.get("nonfinite"):
            self.nonfinite.load_state_dict(payload["nonfinite"])
        self.step = int(payload["step"])
        self.balance.steps = self.step
        self.best_success = payload.get("best_success")
        if self.probe is not None and payload.get("affinity_probe"):
            self.probe.load_state_dict(payload["affinity_probe"])
        with self.ranks.together("resuming the metrics log", self.device):
            if self.ranks.is_main:
                self._truncate_metrics(self.step)
                print(f"rlmtl train: resumed {last} at step {self.step} on {self.ranks.world_size} rank(s)", file=sys.stderr)

    # ------------------------------------------------------------------ metrics
    def _truncate_metrics(self, step: int) -> None:
        """Drop metric lines written after the checkpoint we resume from."""
        path = self.run_dir / METRICS_FILE
        if not path.is_file():
            return
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # blank, or torn by a crash mid-append
            if record.get("step", 0) <= step:
                kept.append(line)
        write_text_atomic(path, "".join(line + "\n" for line in kept))

    def _append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.run_dir / METRICS_FILE, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    # ------------------------------------------------------------------ loop
    def _make_balance(self) -> MultiTaskBackward:
        unknown = [t for t in self.config.weighting.primary_tasks if t not in self.tasks]
        if unknown:
            raise ConfigError(f"weighting.primary_tasks: {unknown} are not tasks of this run ({', '.join(self.tasks)})")
        primary = [self.tasks.index(t) for t in self.config.weighting.primary_tasks]
        return agent_backward(self.agent, self.weighting, self.optimizer, primary)

    def train_step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step; returns (losses [K], weights [K]) as device tensors."""
        self.agent.train()
        needs = self.weighting.requirements
        batch = self.sampler.sample()
        if self.probe is not None and self.step % self.config.affinity.probe_every == 0:
            self._probe_affinity(batch)
        val_batch = (
            self.val_sampler.sample() if self.val_sampler is not None and self.weighting.uses_val_batch(self.balance.steps) else None
        )
        self.optimizer.zero_grad(set_to_none=True)
        losses = None if needs.task_grads else self.agent.task_losses(batch)
        losses, result = self.balance.backward(losses, batch=batch, val_batch=val_batch)
        if self.config.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.agent.parameters(), self.config.train.grad_clip)
        found_inf = self.balance.found_inf
        self.optimizer.found_inf = found_inf  # read by the fused AdamW step, as GradScaler does
        try:
            self.optimizer.step()
        finally:
            del self.optimizer.found_inf
        self.scheduler.step()
        losses_after = None
        if needs.post_step_losses:
            with torch.no_grad():
                losses_after = self.agent.task_losses(batch)
        self.balance.after_step(losses_after)
        self.step += 1
        bad = found_inf > 0
        self.nonfinite.record(bad, self.balance.nonfinite_tasks, self.step)
        nan = torch.full_like(losses, float("nan"))
        return torch.where(bad, nan, losses), torch.where(bad, nan, result.weights.detach().to(losses.dtype))

    def _probe_affinity(self, batch: Any) -> None:
        """TAG probe at the current parameters, on this step's batches (before the update)."""
        assert self.probe is not None
        losses, grads = self.agent.per_task_gradients(batch)
        shared = {f"encoder.{name}": grad for name, grad in grads["encoder"].items()}
        agent = self.agent
        self.probe.probe(
            losses,
            shared,
            dict(agent.named_parameters()),
            self.optimizer,
            lambda params, b: torch.func.functional_call(agent, params, (b,)),
            batch,
        )

    def run(self) -> TrainResult:
        cfg = self.config.train
        from torch.utils.tensorboard import SummaryWriter

        main = self.ranks.is_main
        writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.step if self.step else None) if main else None
        if self.step == 0 and writer is not None:
            writer.add_text("config", "```yaml\n" + yaml.safe_dump(self.meta["config"], sort_keys=False) + "\n```")
        end = cfg.steps if self.stop_after is None else min(cfg.steps, self.step + self.stop_after)
        k = len(self.tasks)
        loss_sum = torch.zeros(k, device=self.device)
        finite_steps = torch.zeros(1, device=self.device)
        weight_trace = torch.zeros(cfg.log_every, k, device=self.device)  # every step's weights, flushed at log time
        interval_steps, interval_start = 0, time.perf_counter()
        bar = tqdm(total=cfg.steps, initial=self.step, desc="train", unit="step", disable=not (self.progress and main), file=sys.stderr)
        last_path = resolve_last(self.ckpt_dir)
        while self.step < end:
            losses, weights = self.train_step()  # NaN on a skipped step
            loss_sum += losses.nan_to_num(0.0)
            finite_steps += ~losses[:1].isnan()
            weight_trace[interval_steps] = weights
            interval_steps += 1
            if self.step % cfg.log_every == 0 or self.step == end:
                elapsed = time.perf_counter() - interval_start
                self.weighting.check()
                self.nonfinite.check(self.tasks)
                if self.ranks.differing(list(self.weighting.state_dict().values())):
                    raise RuntimeError(f"weighting {self.config.weighting.name!r}: its state differs across ranks at step {self.step}")
                sums = torch.cat([loss_sum, finite_steps]).cpu()
                mean_losses = (sums[:k] / sums[k]).tolist() if sums[k] > 0 else [float("nan")] * k
                trace = weight_trace[:interval_steps].cpu()
                record = {
                    **({"affinity": self.probe.affinity().cpu().tolist()} if self.probe is not None else {}),
                    "step": self.step,
                    "lr": self.scheduler.get_last_lr()[0],
                    "samples_per_s": interval_steps * k * cfg.batch_per_task / max(elapsed, 1e-9),
                    "loss": dict(zip(self.tasks, mean_losses)),
                    "weight": dict(zip(self.tasks, trace.nanmean(0).tolist())),
                    "nonfinite_steps": self.nonfinite.take_skipped(),
                }
                if writer is not None:
                    self._log(writer, record, trace)
                bar.update(interval_steps)
                bar.set_postfix(loss=f"{sum(mean_losses) / k:.4f}")
                loss_sum.zero_()
                finite_steps.zero_()
                interval_steps, interval_start = 0, time.perf_counter()
            evaluate_now = cfg.eval_every and self.step % cfg.eval_every == 0
            if self.step % cfg.checkpoint_every == 0 or self.step == end or evaluate_now:
                last_path = self.save()
            if evaluate_now and self._evaluate_on_main(last_path, writer):
                last_path = self.save()  # so a resumed run knows the new best
        bar.close()
        if last_path is None:  # nothing to do: already at train.steps
            last_path = self.save()
        if writer is not None:
            writer.close()
        best = self.ckpt_dir / "best.pt"
        return TrainResult(self.run_dir, self.step, last_path, best if best.is_file() else None, self.best_success)

    def _log(self, writer: Any, record: dict[str, Any], weight_trace: torch.Tensor) -> None:
        """TensorBoard: interval-mean losses, and the task weights of every step of the interval."""
        step = record["step"]
        first = step - weight_trace.shape[0] + 1
        for index, task in enumerate(self.tasks):
            writer.add_scalar(f"loss/{task}", record["loss"][task], step)
            for offset, weight in enumerate(weight_trace[:, index].tolist()):
                writer.add_scalar(f"weight/{task}", weight, first + offset)
        writer.add_scalar("loss/mean", sum(record["loss"].values()) / len(self.tasks), step)
        writer.add_scalar("train/lr", record["lr"], step)
        writer.add_scalar("train/samples_per_s", record["samples_per_s"], step)
        self._append_metrics(record)

    def _evaluate_on_main(self, checkpoint: Path, writer: Any) -> bool:
        """Rank 0 evaluates; every rank learns whether it was a new best."""
        with self.ranks.together(f"evaluating {checkpoint}", self.device):
            new_best = self._evaluate(checkpoint, writer) if self.ranks.is_main else False
        return self.ranks.any_true(new_best, self.device)

    def _evaluate(self, checkpoint: Path, writer: Any) -> bool:
        """Evaluate `checkpoint`, log it, keep best.pt; True when it is a new best."""
        from rlmtl.evaluate import evaluate_checkpoint

        cfg = self.config
        result = evaluate_checkpoint(
            checkpoint,
            episodes_per_task=cfg.train.eval_episodes,
            workers=cfg.eval.workers,
            seed=cfg.eval.seed,
            progress=False,
            episode_timeout_s=cfg.eval.episode_timeout_s,
            max_episode_retries=cfg.eval.max_episode_retries,
        )
        success = result["overall"]["success_rate"]
        for task, row in result["per_task"].items():
            writer.add_scalar(f"eval/success/{task}", row["success_rate"], self.step)
        writer.add_scalar("eval/success/mean", success, self.step)
        self._append_metrics(
            {"step": self.step, "eval_success": success, "eval_per_task": {t: r["success_rate"] for t, r in result["per_task"].items()}}
        )
        if self.best_success is None or success > self.best_success:
            self.best_success = success
            save_checkpoint(self.ckpt_dir / "best.pt", self._payload())
            print(f"rlmtl train: step {self.step}: new best success {success:.3f}", file=sys.stderr)
            return True
        return False


def train(config: RunConfig, resume: bool = False, progress: bool = True, stop_after: int | None = None) -> TrainResult:
    """Train the run described by `config` (see `Trainer`); under torchrun, leave the process group at the end."""
    try:
        return Trainer(config, resume=resume, progress=progress, stop_after=stop_after).run()
    finally:
        shutdown()
