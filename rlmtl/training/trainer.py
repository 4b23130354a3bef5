"""`rlmtl train`: the training loop. Each iteration is one `train_step` (step.py: batches -> K
losses -> weighting -> AdamW), then the hooks (hooks.py: metrics, checkpoints, periodic evaluation).

The loop keeps everything on the device: losses, weights and their running sums are tensors, and
the host reads them only every `train.log_every` steps.

Under `torchrun` (rlmtl/distributed.py) every rank draws its slice of the same global batch, the
engine averages losses and gradients over ranks, and rank 0 alone logs, checkpoints and
evaluates while the others wait for it.

Non-finite steps: the engine flags a NaN/inf loss or gradient on the device; the fused AdamW skips
that step (as under a GradScaler), the weighting's state is put back, and `NonFiniteMonitor`
(nonfinite.py) counts it. After `train.max_nonfinite_steps` skipped steps in a row the run stops
naming the tasks and the step. Skipped steps still count towards `train.steps` (the schedule moves on).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from rlmtl.atomic import write_text_atomic
from rlmtl.build import check_head_fits_suite, check_pretrained_image_encoder, resolve_device
from rlmtl.config import RunConfig, config_to_yaml
from rlmtl.data.validation_split import split_validation
from rlmtl.distributed import Ranks, shutdown
from rlmtl.envs import make_suite
from rlmtl.errors import CheckpointError, ConfigError
from rlmtl.provenance import provenance_line
from rlmtl.tag.probe import AffinityProbe
from rlmtl.training.checkpoint import (
    CheckpointPayload,
    commit_checkpoint,
    load_checkpoint,
    resolve_last,
    save_checkpoint,
)
from rlmtl.training.hooks import EvaluatePeriodically, Hook, LogMetrics, LogValidationLoss, ProbeAffinity, SaveCheckpoints
from rlmtl.training.run_log import RunLog, truncate_metrics
from rlmtl.training.setup import build_parts, load_training_data, prepare_run_dir, validation_batch
from rlmtl.training.state import check_resumable, restore_training, rng_state, set_rng_state, training_payload
from rlmtl.training.step import train_step


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    last_checkpoint: Path
    best_checkpoint: Path | None
    best_success: float | None


class Trainer:
    """One training run in `config.run_dir`; `run()` trains to `train.steps` (or `stop_after` more steps)."""

    def __init__(self, config: RunConfig, resume: bool = False, progress: bool = True, stop_after: int | None = None) -> None:
        self.config = config
        self.stop_after = stop_after
        self.ranks, self.device = Ranks.from_environment(resolve_device(config.train.device))
        if self.ranks.distributed and config.affinity.probe_every:
            raise ConfigError("affinity.probe_every: the TAG affinity probe runs on one process only (not under torchrun)")
        if config.train.num_threads:
            torch.set_num_threads(config.train.num_threads)
        suite = make_suite(config.env.backend, config.env.suite)
        tasks = suite.select_tasks(config.env.tasks)
        check_head_fits_suite(config, suite)
        pretrained = check_pretrained_image_encoder(config)
        data, self.meta = load_training_data(config, tasks, suite)
        held_out = None
        if config.data.val_demos:
            data, held_out = split_validation(data, config.data.val_demos, config.agent.obs_keys)
        with self.ranks.together("preparing the run folder", self.device):
            self.run_dir, self.lock = prepare_run_dir(config, resume, write=self.ranks.is_main)
        try:
            self.ckpt_dir = self.run_dir / "checkpoints"
            self.parts = build_parts(config, tasks, data, self.meta, self.ranks, self.device, pretrained)
            self.probe: AffinityProbe | None = None
            if config.affinity.probe_every:
                self.probe = AffinityProbe(len(tasks), config.affinity.divide_by_lr).to(self.device)
                self.parts.before_update.append(ProbeAffinity(self.parts, self.probe, config.affinity.probe_every))
            self.hooks: list[Hook] = [LogMetrics(progress), SaveCheckpoints()]
            if held_out is not None:
                self.hooks.insert(1, LogValidationLoss(validation_batch(held_out, self.parts.agent, config, self.device)))
            if config.train.eval_every:
                self.hooks.append(EvaluatePeriodically(config.train.eval_every))
            self.best_success: float | None = None
            self.log: RunLog | None = None
            self.last_checkpoint: Path | None = None
            self.saved_step: int | None = None
            self.end_step = config.train.steps
            if resume:
                self._resume()
            if self.ranks.is_main:  # after the resume checks: a refused --resume leaves the run's config alone
                header = f"# written by {provenance_line()}\n"
                write_text_atomic(self.run_dir / "config.yaml", header + config_to_yaml(config))
            weighting_state = list(self.parts.weighting.state_dict().values())
            self.ranks.broadcast_([*self.parts.agent.parameters(), *weighting_state])  # same start on every rank
        except BaseException:  # nothing of this run started: leave its folder unlocked
            self.release()
            raise

    @property
    def step(self) -> int:
        """Optimizer steps taken: the weighting engine's count (one counter for the run)."""
        return self.parts.balance.steps

    def train_step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step (see step.py); returns (losses [K], weights [K]) as device tensors."""
        return train_step(self.parts)

    def run(self) -> TrainResult:
        """Train to `train.steps` (or `stop_after` more steps), calling the hooks after every step;
        the run folder's lock is released at the end."""
        try:
            return self._run()
        finally:
            self.release()

    def release(self) -> None:
        """Release the run folder's lock (the trainer writes nothing after this) and the samplers' files."""
        parts = getattr(self, "parts", None)  # absent when construction failed early
        for sampler in (parts.sampler, parts.val_sampler) if parts is not None else ():
            if sampler is not None:
                sampler.close()
        if self.lock is not None:
            self.lock.release()

    def _run(self) -> TrainResult:
        if self.lock is not None and not self.lock.held:  # a second run() of this trainer
            self.lock.acquire()
        self.end_step = self.config.train.steps if self.stop_after is None else min(self.config.train.steps, self.step + self.stop_after)
        self.last_checkpoint = resolve_last(self.ckpt_dir)
        self.log = RunLog(self.run_dir, self.step, self.meta["config"]) if self.ranks.is_main else None
        try:
            for hook in self.hooks:
                hook.on_start(self)
            while self.step < self.end_step:
                losses, weights = self.train_step()
                for hook in self.hooks:
                    hook.after_step(self, losses, weights)
            for hook in self.hooks:
                hook.on_end(self)
        finally:
            if self.log is not None:
                self.log.close()
        assert self.last_checkpoint is not None
        best = self.ckpt_dir / "best.pt"
        return TrainResult(self.run_dir, self.step, self.last_checkpoint, best if best.is_file() else None, self.best_success)

    # ------------------------------------------------------------------ checkpoints
    def payload(self) -> CheckpointPayload:
        """This run's state as a checkpoint (see state.py)."""
        return training_payload(self.parts, self.meta, self.best_success, self.probe, rng_state(self.device, self.ranks))

    def save(self) -> Path:
        """Rank 0 writes the checkpoint; the others wait for it. Returns its path on every rank."""
        self.parts.nonfinite.check(self.parts.tasks)
        path = self.ckpt_dir / f"step_{self.step:08d}.pt"
        with self.ranks.together(f"writing {path}", self.device):
            if self.ranks.is_main:
                save_checkpoint(path, self.payload())
                commit_checkpoint(self.ckpt_dir, path, max(1, self.config.train.keep_checkpoints))
        self.last_checkpoint, self.saved_step = path, self.step
        return path

    def _resume(self) -> None:
        last = resolve_last(self.ckpt_dir)
        if last is None:
            raise CheckpointError(f"{self.ckpt_dir}: nothing to resume (no checkpoints/last)")
        payload = load_checkpoint(last, self.device)
        check_resumable(payload, self.meta, last)
        restore_training(self.parts, payload, self.probe)
        set_rng_state(payload["rng"], self.device, self.ranks)
        self.best_success = payload.get("best_success")
        with self.ranks.together("resuming the metrics log", self.device):
            if self.ranks.is_main:
                truncate_metrics(self.run_dir, self.step)
                print(f"rlmtl train: resumed {last} at step {self.step} on {self.ranks.world_size} rank(s)", file=sys.stderr)


def train(config: RunConfig, resume: bool = False, progress: bool = True, stop_after: int | None = None) -> TrainResult:
    """Train the run described by `config` (see `Trainer`); under torchrun, leave the process group at the end."""
    try:
        return Trainer(config, resume=resume, progress=progress, stop_after=stop_after).run()
    finally:
        shutdown()
