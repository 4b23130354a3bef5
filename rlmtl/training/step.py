"""One training step, top to bottom.

    batch (task-balanced, [K, B])  ->  before-update hooks (the TAG probe)
    -> the weighting engine: K losses (or K gradients), the method's combination, .grad of every
       parameter, clipped to `train.grad_clip` with the norm its non-finite check takes; every
       `diagnostics.every` steps it also hands the step's task gradients [K, P] to the
       gradient-conflict monitor (gradient_conflict.py)
    -> optimizer step (skipped on the device when non-finite)  ->  the weights' moving average
       (train.ema_decay, ema.py)  ->  lr schedule
    -> the engine's post-step update (FAMO's losses after the step, ...)  ->  non-finite bookkeeping

Nothing here reads a tensor on the host: losses and weights come back as device tensors, NaN on a
skipped step, and the trainer's hooks read them (and the conflict measurements) at log intervals.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable

import torch

from rlmtl.agents.base import Batch, MultiTaskAgent
from rlmtl.data.sampler import TaskBalancedSampler
from rlmtl.data.streaming import StreamingSampler
from rlmtl.training.ema import ParameterAverage
from rlmtl.training.gradient_conflict import GradientConflictMonitor
from rlmtl.training.nonfinite import NonFiniteMonitor
from rlmtl.weighting import MultiTaskBackward, Weighting

# (engine steps taken before this one, this step's batch) -> None; runs before the update
BeforeUpdate = Callable[[int, Batch], None]


@dataclass
class TrainingParts:
    """What one training step touches, built from the config by `training.setup.build_parts`."""

    tasks: list[str]
    agent: MultiTaskAgent
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    weighting: Weighting
    balance: MultiTaskBackward  # the weighting engine; its `steps` is the run's step count
    sampler: TaskBalancedSampler | StreamingSampler
    val_sampler: TaskBalancedSampler | StreamingSampler | None  # a second batch, for methods that read one
    nonfinite: NonFiniteMonitor
    conflict: GradientConflictMonitor | None = None  # diagnostics.every > 0
    ema: ParameterAverage | None = None  # train.ema_decay > 0
    autocast_device: str | None = None  # train.precision=bf16: the device type the step runs under bfloat16 autocast
    before_update: list[BeforeUpdate] = field(default_factory=list)


def train_step(parts: TrainingParts) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step; returns (losses [K], weights [K]) as device tensors, NaN when skipped."""
    if not parts.agent.training:  # Module.train() walks every submodule: only when something switched it
        parts.agent.train()
    batch = parts.sampler.sample()
    for hook in parts.before_update:
        hook(parts.balance.steps, batch)
    val_batch = parts.val_sampler.sample() if parts.val_sampler is not None and parts.balance.needs_val_batch() else None
    parts.optimizer.zero_grad(set_to_none=True)
    step = parts.balance.steps + 1  # this step's number, as the log and checkpoints count it
    observe = parts.conflict.observer(step) if parts.conflict is not None and parts.conflict.due(step) else None
    precision = torch.autocast(parts.autocast_device, dtype=torch.bfloat16) if parts.autocast_device is not None else nullcontext()
    with precision:
        losses, result = parts.balance.backward(batch=batch, val_batch=val_batch, observe_task_grads=observe)
    losses = losses.float()
    parts.balance.optimizer_step()
    if parts.ema is not None:
        parts.ema.update()
    parts.scheduler.step()
    parts.balance.after_step()
    skipped = parts.balance.skipped
    parts.nonfinite.record(skipped, parts.balance.nonfinite_tasks, parts.balance.steps)
    return torch.where(skipped, float("nan"), losses), torch.where(skipped, float("nan"), result.weights.detach().to(losses.dtype))
