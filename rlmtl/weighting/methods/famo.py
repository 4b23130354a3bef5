"""FAMO: Fast Adaptive Multitask Optimization.

Liu, Feng, Stone, Liu, "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023, arXiv 2306.03792.

The rule, as in the authors' official `famo.py` (github.com/Cranial-XIX/FAMO):

    combine(L):     z = softmax(w);  D = L - min_losses + 1e-8  (float32);  c = sum_i z_i / D_i (detached)
                    loss = sum_i z_i log(D_i) / c
                    => grad of loss = sum_i weights_i grad L_i with weights_i = (z_i / D_i) / c  (sum to 1)
    after_step(L'): delta = log(L - min + 1e-8) - log(L' - min + 1e-8)   (L: this step's losses, L': after the step)
                    w.grad = J_softmax(w)^T delta = z * (delta - z . delta);  one Adam step on w

The logits' optimizer is Adam with L2 weight decay added to the gradient (`torch.optim.Adam`
semantics), with the official `famo.py` defaults: `w_lr` = 0.025, `gamma` = 0.01. (The repo's
`weight_methods.FAMO` and run scripts use other gammas, e.g. 0.001; LibMTL uses gamma 1e-3.)

Differences from the official code:
* No gradient clipping here: official `famo.py` clips the shared parameters' gradient norm to
  `max_norm` = 1.0 after backward; in rlmtl clipping is the trainer's job (`train.grad_clip`).
* Positivity of L - min_losses (required by the log; negative log-likelihood losses violate it,
  see FAMO issue #9) is checked without a host sync: every combine and
  after_step ORs `~(L - min_losses > 0)` into the device-side buffer `invalid_seen` [K] (NaN counts as
  invalid); `check()` raises the ValueError naming the task. The trainer calls `check()` at log
  time. Set the class attribute `FAMO.strict_checks = True` (or on one instance) to raise inside
  `combine` as soon as a bad loss arrives while autograd is enabled (costs one sync per step).
  Until then the offending task yields NaN, as the official code would. Set `min_losses` below
  the attainable minimum for losses that can be <= 0 (the maintainers' advice, FAMO issue #9).
"""

from __future__ import annotations

from typing import Sequence

import torch

from rlmtl.weighting.adam import BufferAdam
from rlmtl.weighting.base import Requirements, StepContext, Weighting, WeightingResult, register_weighting

EPSILON = 1e-8


@register_weighting("famo")
class FAMO(Weighting):
    """FAMO loss-level weighting; needs the losses on the same batches after the optimizer step.

    Args:
        num_tasks: K.
        w_lr: learning rate of the task logits' Adam (official famo.py: 0.025).
        gamma: L2 weight decay of that Adam (official famo.py: 0.01).
        min_losses: per-task lower bounds of the losses, a list of K floats or one float (default 0).

    State (all buffers): `logits` [K], the logits' Adam moments, `min_losses` [K],
    `previous_losses` [K] (this step's losses, for after_step), `invalid_seen` [K] bool and
    `invalid_gap` [K] (the first offending L - min_losses of each task).
    """

    requirements = Requirements(post_step_losses=True)
    strict_checks: bool = False

    def __init__(self, num_tasks: int, w_lr: float = 0.025, gamma: float = 0.01, min_losses: float | Sequence[float] = 0.0) -> None:
        super().__init__(num_tasks)
        if isinstance(min_losses, (int, float)):
            bounds = torch.full((num_tasks,), float(min_losses))
        else:
            bounds = torch.tensor([float(v) for v in min_losses])
            if bounds.shape != (num_tasks,):
                raise ValueError(f"FAMO: min_losses has {bounds.numel()} values, expected one per task ({num_tasks})")
        self.register_buffer("logits", torch.zeros(num_tasks))
        self.register_buffer("min_losses", bounds)
        self.register_buffer("previous_losses", torch.zeros(num_tasks))
        self.register_buffer("invalid_seen", torch.zeros(num_tasks, dtype=torch.bool))
        self.register_buffer("invalid_gap", torch.zeros(num_tasks))
        self.logits_optimizer = BufferAdam((num_tasks,), lr=w_lr, weight_decay=gamma)

    def set_min_losses(self, min_losses: torch.Tensor | Sequence[float] | float) -> None:
        """Replace the per-task lower bounds [K] (or one float for all)."""
        with torch.no_grad():
            self.min_losses.copy_(torch.as_tensor(min_losses, dtype=self.min_losses.dtype).expand(self.num_tasks))

    def _gaps(self, losses: torch.Tensor) -> torch.Tensor:
        """L - min_losses [K] in float32, recording non-positive entries in `invalid_seen`."""
        gaps = losses.float() - self.min_losses
        with torch.no_grad():
            newly_invalid = ~(gaps.detach() > 0) & ~self.invalid_seen
            self.invalid_gap.copy_(torch.where(newly_invalid, gaps.detach(), self.invalid_gap))
            self.invalid_seen.logical_or_(newly_invalid)
        return gaps

    def check(self) -> None:
        """Raise ValueError if any task's loss minus min_losses was ever <= 0 (or NaN). Syncs with the host."""
        if bool(self.invalid_seen.any()):
            task = int(self.invalid_seen.nonzero()[0, 0])
            gap = float(self.invalid_gap[task])
            raise ValueError(
                f"FAMO: loss of task {task} minus min_losses is not positive ({gap:.6g}); FAMO takes log(L - min_losses), "
                "so set weighting.params.min_losses below the lowest loss the task can reach (e.g. for NLL losses)"
            )

    def combine(self, losses: torch.Tensor, context: StepContext) -> WeightingResult:
        """losses [K] -> loss = sum_i z_i log(D_i) / c and its effective weights [K] (sum to 1)."""
        gaps = self._gaps(losses)
        if self.strict_checks and torch.is_grad_enabled():
            self.check()
        distance = gaps + EPSILON
        z = torch.softmax(self.logits, dim=0)
        normaliser = (z / distance).sum().detach()
        loss = (z * distance.log()).sum() / normaliser
        weights = (z / distance).detach() / normaliser
        with torch.no_grad():
            self.previous_losses.copy_(losses.detach().float())
        return WeightingResult(weights=weights, loss=loss)

    @torch.no_grad()
    def after_step(self, losses_after: torch.Tensor | None, context: StepContext) -> None:
        """One Adam step on the logits from the log-loss decrease delta [K] of this step."""
        if losses_after is None:
            raise ValueError("FAMO.after_step needs the losses after the optimizer step")
        before = (self.previous_losses - self.min_losses + EPSILON).log()
        after = (self._gaps(losses_after.detach()) + EPSILON).log()
        delta = before - after
        z = torch.softmax(self.logits, dim=0)
        logits_grad = z * (delta - (z * delta).sum())  # J_softmax(w)^T delta
        self.logits_optimizer.step(self.logits, logits_grad)
