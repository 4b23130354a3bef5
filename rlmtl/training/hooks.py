"""What the training loop does around the optimizer step, one hook each: log metrics, save
checkpoints, evaluate periodically (keeping best.pt), and TAG's affinity probe.

A hook sees the trainer after every step (`after_step`) and at the start and end of `Trainer.run`.
Hooks run in the order the trainer lists them: log, then checkpoint, then evaluate.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

import torch

from rlmtl.agents.base import Batch
from rlmtl.progress import progress_bar
from rlmtl.tag.probe import AffinityProbe
from rlmtl.training.checkpoint import save_checkpoint
from rlmtl.training.gradient_conflict import ConflictMeasurement

if TYPE_CHECKING:
    from rlmtl.training.step import TrainingParts
    from rlmtl.training.trainer import Trainer


class Hook:
    """Called by `Trainer.run`: `on_start`, then `after_step` after every optimizer step, then `on_end`."""

    def on_start(self, trainer: "Trainer") -> None:
        pass

    def after_step(self, trainer: "Trainer", losses: torch.Tensor, weights: torch.Tensor) -> None:
        """`losses`, `weights`: [K] device tensors of the step just taken (NaN when it was skipped)."""

    def on_end(self, trainer: "Trainer") -> None:
        pass


class LogMetrics(Hook):
    """Every `train.log_every` steps (the only host reads of the loop): the interval's mean losses,
    every step's weights, the learning rate, throughput and skipped steps, and the gradient-conflict
    measurements taken since the last log step, to TensorBoard and metrics.jsonl; the weighting's
    and the non-finite monitor's checks; the progress bar."""

    def __init__(self, progress: bool) -> None:
        self.progress = progress

    def on_start(self, trainer: "Trainer") -> None:
        cfg, k = trainer.config.train, len(trainer.parts.tasks)
        device = trainer.device
        self.loss_sum = torch.zeros(k, device=device)
        self.finite_steps = torch.zeros(1, device=device)
        self.weight_trace = torch.zeros(cfg.log_every, k, device=device)  # every step's weights, flushed at log time
        self.interval_steps, self.interval_start = 0, time.perf_counter()
        main = trainer.ranks.is_main
        self.bar = progress_bar(cfg.steps, "train", "step", self.progress and main, initial=trainer.step)

    def after_step(self, trainer: "Trainer", losses: torch.Tensor, weights: torch.Tensor) -> None:
        self.loss_sum += losses.nan_to_num(0.0)
        self.finite_steps += ~losses[:1].isnan()
        self.weight_trace[self.interval_steps] = weights
        self.interval_steps += 1
        if trainer.step % trainer.config.train.log_every == 0 or trainer.step == trainer.end_step:
            self._flush(trainer)

    def _flush(self, trainer: "Trainer") -> None:
        cfg, parts, k = trainer.config.train, trainer.parts, len(trainer.parts.tasks)
        elapsed = time.perf_counter() - self.interval_start
        parts.weighting.check()
        parts.nonfinite.check(parts.tasks)
        if trainer.ranks.differing(list(parts.weighting.state_dict().values())):
            raise RuntimeError(f"weighting {trainer.config.weighting.name!r}: its state differs across ranks at step {trainer.step}")
        sums = torch.cat([self.loss_sum, self.finite_steps]).cpu()
        mean_losses = (sums[:k] / sums[k]).tolist() if sums[k] > 0 else [float("nan")] * k
        trace = self.weight_trace[: self.interval_steps].cpu()
        conflicts = parts.conflict.take() if parts.conflict is not None else []  # every rank: none kept unread
        record = {
            **({"affinity": trainer.probe.affinity().cpu().tolist()} if trainer.probe is not None else {}),
            "step": trainer.step,
            "lr": parts.scheduler.get_last_lr()[0],
            "samples_per_s": self.interval_steps * k * cfg.batch_per_task / max(elapsed, 1e-9),
            "loss": dict(zip(parts.tasks, mean_losses)),
            "weight": dict(zip(parts.tasks, trace.nanmean(0).tolist())),
            "nonfinite_steps": parts.nonfinite.take_skipped(),
            **(conflicts[-1].record(parts.tasks) if conflicts else {}),
        }
        if trainer.log is not None:
            self._write(trainer, record, trace, conflicts)
        self.bar.update(self.interval_steps)
        self.bar.set_postfix(loss=f"{sum(mean_losses) / k:.4f}")
        self.loss_sum.zero_()
        self.finite_steps.zero_()
        self.interval_steps, self.interval_start = 0, time.perf_counter()

    @staticmethod
    def _write(trainer: "Trainer", record: dict[str, Any], weight_trace: torch.Tensor, conflicts: list[ConflictMeasurement]) -> None:
        """TensorBoard: interval-mean losses, the task weights of every step of the interval, and
        each conflict measurement at its own step; metrics.jsonl: the record (with the interval's
        last conflict measurement, when it has one)."""
        log, tasks, step = trainer.log, trainer.parts.tasks, record["step"]
        assert log is not None
        first = step - weight_trace.shape[0] + 1
        for index, task in enumerate(tasks):
            log.scalar(f"loss/{task}", record["loss"][task], step)
            for offset, weight in enumerate(weight_trace[:, index].tolist()):
                log.scalar(f"weight/{task}", weight, first + offset)
        for measurement in conflicts:
            for tag, value in measurement.scalars(tasks).items():
                log.scalar(tag, value, measurement.step)
        log.scalar("loss/mean", sum(record["loss"].values()) / len(tasks), step)
        log.scalar("train/lr", record["lr"], step)
        log.scalar("train/samples_per_s", record["samples_per_s"], step)
        log.append(record)

    def on_end(self, trainer: "Trainer") -> None:
        self.bar.close()


class LogValidationLoss(Hook):
    """Every `train.log_every` steps (and at the run's last step): each task's loss on a fixed
    sample of its held-out demos (`data.val_demos`), in eval mode without gradients, as
    `val_loss/<task>` and `val_loss/mean` in TensorBoard and `val_loss` in metrics.jsonl (rank 0)."""

    def __init__(self, batch: Batch) -> None:
        self.batch = batch  # [K, VAL_SAMPLES_PER_TASK] held-out samples, drawn once

    def after_step(self, trainer: "Trainer", losses: torch.Tensor, weights: torch.Tensor) -> None:
        if trainer.log is None or not (trainer.step % trainer.config.train.log_every == 0 or trainer.step == trainer.end_step):
            return
        agent = trainer.parts.agent
        agent.eval()  # the next training step switches it back
        with torch.no_grad():
            values = agent.task_losses(self.batch).cpu().tolist()
        tasks = trainer.parts.tasks
        for task, value in zip(tasks, values):
            trainer.log.scalar(f"val_loss/{task}", value, trainer.step)
        trainer.log.scalar("val_loss/mean", sum(values) / len(values), trainer.step)
        trainer.log.append({"step": trainer.step, "val_loss": dict(zip(tasks, values))})


class SaveCheckpoints(Hook):
    """A checkpoint every `train.checkpoint_every` steps and at the last step of the run; one at
    the end when the run had nothing left to do (already at `train.steps`)."""

    def after_step(self, trainer: "Trainer", losses: torch.Tensor, weights: torch.Tensor) -> None:
        if trainer.step % trainer.config.train.checkpoint_every == 0 or trainer.step == trainer.end_step:
            trainer.save()

    def on_end(self, trainer: "Trainer") -> None:
        if trainer.last_checkpoint is None:
            trainer.save()


class EvaluatePeriodically(Hook):
    """Every `train.eval_every` steps: rank 0 rolls the newest checkpoint out
    (`train.eval_episodes` per task), logs the success rates, and keeps the best as best.pt."""

    def __init__(self, every: int) -> None:
        self.every = every

    def after_step(self, trainer: "Trainer", losses: torch.Tensor, weights: torch.Tensor) -> None:
        if trainer.step % self.every:
            return
        if trainer.saved_step != trainer.step:
            trainer.save()
        checkpoint = trainer.last_checkpoint
        with trainer.ranks.together(f"evaluating {checkpoint}", trainer.device):
            new_best = self._evaluate(trainer, checkpoint) if trainer.ranks.is_main else False
        if trainer.ranks.any_true(new_best, trainer.device):
            trainer.save()  # so a resumed run knows the new best

    @staticmethod
    def _evaluate(trainer: "Trainer", checkpoint: Any) -> bool:
        """Evaluate `checkpoint`, log it, keep best.pt; True when it is a new best."""
        from rlmtl.evaluation.evaluate import evaluate_checkpoint
        from rlmtl.evaluation.settings import EvalSettings

        cfg, step = trainer.config, trainer.step
        settings = EvalSettings.from_config(cfg.eval, episodes_per_task=cfg.train.eval_episodes, video=False, progress=False)
        result = evaluate_checkpoint(checkpoint, settings)
        assert result is not None and trainer.log is not None
        success = result["overall"]["success_rate"]
        for task, row in result["per_task"].items():
            trainer.log.scalar(f"eval/success/{task}", row["success_rate"], step)
        trainer.log.scalar("eval/success/mean", success, step)
        trainer.log.append(
            {"step": step, "eval_success": success, "eval_per_task": {t: r["success_rate"] for t, r in result["per_task"].items()}}
        )
        if trainer.best_success is None or success > trainer.best_success:
            trainer.best_success = success
            save_checkpoint(trainer.ckpt_dir / "best.pt", trainer.payload())
            print(f"rlmtl train: step {step}: new best success {success:.3f}", file=sys.stderr)
            return True
        return False


class ProbeAffinity:
    """TAG's affinity probe every `affinity.probe_every` steps, at the current parameters, on the
    step's own batches, before the update (a before-update hook of the step)."""

    def __init__(self, parts: "TrainingParts", probe: AffinityProbe, every: int) -> None:
        self.parts, self.probe, self.every = parts, probe, every

    def __call__(self, step: int, batch: Batch) -> None:
        if step % self.every:
            return
        parts = self.parts
        agent = parts.agent
        losses, shared = agent.shared_task_gradients(batch)
        self.probe.probe(
            losses,
            shared,
            dict(agent.named_parameters()),
            parts.optimizer,
            lambda params, b: torch.func.functional_call(agent, params, (b,)),
            batch,
        )
