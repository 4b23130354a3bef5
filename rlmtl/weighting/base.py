"""The weighting interface.

Every step the trainer computes the K per-task losses in one pass and calls

    result = weighting.combine(losses, context)      # losses: [K] tensor, kept per task
    result.loss.backward()                            # unless the method wrote .grad itself
    optimizer.step()
    weighting.after_step(losses_after, context)       # losses_after only if requested

A method declares what it needs in `requirements`; the trainer fills exactly those fields of the
`StepContext` and never looks at method names. Methods are `nn.Module`s: their state lives in
buffers/parameters on the model's device, is saved through `state_dict()` with every checkpoint,
and no method may synchronise with the host (`.item()`, `.cpu()`) inside `combine`/`after_step`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from rlmtl.registry import Registry


@dataclass(frozen=True)
class Requirements:
    """What a method asks the trainer for, besides the per-task losses."""

    val_batch: bool = False  # a second, independent batch per task (meta-learning, e.g. Auto-Lambda)
    post_step_losses: bool = False  # the losses on the same batch after optimizer.step() (e.g. FAMO)
    task_grads: bool = False  # per-task gradients of the shared parameters (gradient methods)
    optimizer: bool = False  # the live optimizer, read-only (to mirror its step)
    primary_tasks: bool = False  # a non-empty set of primary tasks in the config


@dataclass
class StepContext:
    """What the trainer hands a method at one step; fields not requested stay None."""

    step: int
    model: nn.Module
    batch: Any
    loss_fn: Callable[..., torch.Tensor]  # loss_fn(batch) -> [K] losses of the live model
    shared_parameters: list[nn.Parameter]
    val_batch: Any = None
    optimizer: torch.optim.Optimizer | None = None
    primary_tasks: list[int] | None = None


@dataclass
class WeightingResult:
    """`loss` is backpropagated by the trainer (None when the method set `.grad` itself);
    `weights` [K] are the effective per-task weights, logged every step."""

    loss: torch.Tensor | None
    weights: torch.Tensor


class Weighting(nn.Module):
    """Base class of every method. Subclasses set `requirements` and implement `combine`."""

    requirements = Requirements()

    def __init__(self, num_tasks: int) -> None:
        super().__init__()
        self.num_tasks = num_tasks

    def combine(self, losses: torch.Tensor, context: StepContext) -> WeightingResult:
        """Turn the per-task losses [K] into the loss to backpropagate (or write gradients)."""
        raise NotImplementedError

    def after_step(self, losses_after: torch.Tensor | None, context: StepContext) -> None:
        """Called after optimizer.step(); `losses_after` [K] only if `requirements.post_step_losses`."""


WEIGHTINGS: Registry[type[Weighting]] = Registry("weighting")


def register_weighting(name: str) -> Callable[[type[Weighting]], type[Weighting]]:
    """Class decorator: `@register_weighting("famo")`."""
    return WEIGHTINGS.register(name)


def make_weighting(name: str, num_tasks: int, params: dict[str, Any] | None = None) -> Weighting:
    """Instantiate a registered method; unknown parameters raise TypeError naming them."""
    cls = WEIGHTINGS.get(name)
    try:
        return cls(num_tasks, **(params or {}))
    except TypeError as error:
        raise TypeError(f"weighting {name!r}: bad parameters {params} ({error})") from None
