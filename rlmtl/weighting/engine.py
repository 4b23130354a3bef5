"""`MultiTaskBackward`: one weighting step on any multi-task model, in rlmtl's trainer or your own loop.

    balance = MultiTaskBackward(make_weighting("famo", K), shared_parameters=model.trunk.parameters())
    for batch in loader:
        optimizer.zero_grad()
        losses = per_task_losses(model, batch)        # [K], one scalar per task
        balance.backward(losses)                      # sets .grad of every parameter
        optimizer.step()
        with torch.no_grad():
            balance.after_step(per_task_losses(model, batch))   # only FAMO needs it; harmless otherwise

It provides exactly what the method's `requirements` ask for. Per-task gradients of the shared
parameters come from `per_task_gradients` when the model offers a batched implementation (rlmtl's
agent: one vmapped backward), otherwise from K `autograd.grad` calls on the per-task losses.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from rlmtl.weighting.base import Params, StepContext, Weighting, WeightingResult

# (batch) -> (losses [K] detached, shared grads [K, P], task-specific grads: one [K, *shape] per
# task-specific parameter, slice k = task k's gradient of its own block)
PerTaskGradients = Callable[[Any], tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]]


def flatten_task_grads(grads: Sequence[torch.Tensor], num_tasks: int) -> torch.Tensor:
    """Per-parameter [K, *shape] gradients -> one [K, P] matrix."""
    return torch.cat([g.reshape(num_tasks, -1) for g in grads], dim=1)


class MultiTaskBackward:
    """Drives one `Weighting` for one model.

    Args:
        weighting: the method.
        shared_parameters: parameters every task's loss depends on (the encoder / trunk).
        task_parameters: the rest (heads); default: none (their gradients then come only from
            `loss.backward()` in the loss-level path).
        optimizer: the model's optimizer (methods with `requirements.optimizer` mirror it).
        named_parameters: every model parameter by name (for `functional_losses` methods).
        losses_at: (params by name, batch) -> [K] losses at those parameters, without touching
            the model (e.g. `lambda p, b: torch.func.functional_call(model, p, (b,))`).
        primary_tasks: indices of the primary tasks (auxiliary-learning mode).
        per_task_gradients: a batched per-task gradient function (see `PerTaskGradients`).
    """

    def __init__(
        self,
        weighting: Weighting,
        shared_parameters: Iterable[nn.Parameter],
        task_parameters: Iterable[nn.Parameter] = (),
        *,
        optimizer: torch.optim.Optimizer | None = None,
        named_parameters: dict[str, nn.Parameter] | None = None,
        losses_at: Callable[[Params, Any], torch.Tensor] | None = None,
        primary_tasks: Sequence[int] | None = None,
        per_task_gradients: PerTaskGradients | None = None,
    ) -> None:
        self.weighting = weighting
        self.shared_parameters = list(shared_parameters)
        self.task_parameters = list(task_parameters)
        self.optimizer = optimizer
        self.named_parameters = named_parameters
        self.losses_at = losses_at
        self.per_task_gradients = per_task_gradients
        self.steps = 0
        needs = weighting.requirements
        name = type(weighting).__name__
        if needs.optimizer and optimizer is None:
            raise ValueError(f"{name} mirrors the model optimizer: pass optimizer=")
        if needs.functional_losses and (losses_at is None or named_parameters is None):
            raise ValueError(f"{name} evaluates losses at lookahead parameters: pass losses_at= and named_parameters=")
        if needs.primary_tasks and not primary_tasks:
            raise ValueError(f"{name} needs primary tasks (weighting.primary_tasks)")
        device = self.shared_parameters[0].device if self.shared_parameters else torch.device("cpu")
        self.primary_mask: torch.Tensor | None = None
        if primary_tasks:
            bad = [t for t in primary_tasks if not 0 <= t < weighting.num_tasks]
            if bad:
                raise ValueError(f"primary task indices {bad} out of range for {weighting.num_tasks} tasks")
            self.primary_mask = torch.zeros(weighting.num_tasks, dtype=torch.bool, device=device)
            self.primary_mask[list(primary_tasks)] = True
        self._context: StepContext | None = None

    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"]) if self.optimizer is not None else 0.0

    def backward(self, losses: torch.Tensor | None = None, *, batch: Any = None, val_batch: Any = None) -> tuple[torch.Tensor, WeightingResult]:
        """Combine the per-task losses and set `.grad` on the model's parameters.

        `losses` [K] (with their graph) is required unless a batched `per_task_gradients` is
        used for a task-gradient method (then `batch` is). Returns (losses [K] detached, result).
        """
        needs = self.weighting.requirements
        if needs.val_batch and val_batch is None:
            raise ValueError(f"{type(self.weighting).__name__} needs a second batch per task: pass val_batch=")
        task_grads = head_grads = None
        if needs.task_grads:
            if self.per_task_gradients is not None:
                losses, task_grads, head_grads = self.per_task_gradients(batch)
            else:
                if losses is None:
                    raise ValueError("pass the per-task losses [K]")
                task_grads = self._autograd_task_grads(losses)
        elif losses is None:
            raise ValueError("pass the per-task losses [K]")
        context = StepContext(
            step=self.steps,
            lr=self._lr(),
            shared_parameters=self.shared_parameters,
            primary_tasks=self.primary_mask,
            task_grads=task_grads,
            batch=batch,
            val_batch=val_batch,
            optimizer=self.optimizer if needs.optimizer else None,
            named_parameters=self.named_parameters if needs.functional_losses else None,
            losses_at=self.losses_at if needs.functional_losses else None,
        )
        self._context = context
        result = self.weighting.combine(losses, context)
        if task_grads is None:
            loss = result.loss if result.loss is not None else (result.weights.detach() * losses).sum()
            loss.backward()
        else:
            self._write_grads(result, task_grads, head_grads, losses)
        return losses.detach(), result

    def after_step(self, losses_after: torch.Tensor | None = None) -> None:
        """Call after optimizer.step(); `losses_after` [K] (same batches, updated model) if the method asks."""
        if self.weighting.requirements.post_step_losses and losses_after is None:
            raise ValueError(f"{type(self.weighting).__name__} needs the losses after the step: pass losses_after=")
        if self._context is None:
            raise RuntimeError("after_step() called before backward()")
        self.weighting.after_step(losses_after, self._context)
        self.steps += 1

    # ------------------------------------------------------------------ gradients
    def _autograd_task_grads(self, losses: torch.Tensor) -> torch.Tensor:
        """[K, P] from K autograd.grad calls (the generic path for models without a batched one)."""
        rows = []
        for k in range(losses.shape[0]):
            grads = torch.autograd.grad(losses[k], self.shared_parameters, retain_graph=True, allow_unused=True)
            rows.append(torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, self.shared_parameters)]))
        return torch.stack(rows)

    def _write_grads(self, result: WeightingResult, task_grads: torch.Tensor, head_grads: list[torch.Tensor] | None, losses: torch.Tensor) -> None:
        weights = result.weights.detach()
        shared = result.shared_grad if result.shared_grad is not None else weights @ task_grads
        offset = 0
        for param in self.shared_parameters:
            size = param.numel()
            _accumulate(param, shared[offset : offset + size].view_as(param))
            offset += size
        if head_grads is not None:
            for param, grad in zip(self.task_parameters, head_grads):
                _accumulate(param, grad * weights.view(-1, *([1] * (grad.dim() - 1))))
        elif self.task_parameters:
            grads = torch.autograd.grad((weights * losses).sum(), self.task_parameters, allow_unused=True)
            for param, grad in zip(self.task_parameters, grads):
                if grad is not None:
                    _accumulate(param, grad)


def _accumulate(param: nn.Parameter, grad: torch.Tensor) -> None:
    grad = grad.to(param.dtype)
    if param.grad is None:
        param.grad = grad.clone()
    else:
        param.grad.add_(grad)
