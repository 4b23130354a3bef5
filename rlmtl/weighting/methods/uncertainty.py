"""Uncertainty weighting (UW).

Kendall, Gal, Cipolla, "Multi-Task Learning Using Uncertainty to Weigh Losses for Scene Geometry
and Semantics", CVPR 2018, arXiv 1705.07115.

With a learned log-variance s_i = log sigma_i^2 per task, the objective is

    sum_i L_i / (2 e^{s_i}) + s_i / 2

so the model sees weights w_i = 1 / (2 e^{s_i}), and for fixed losses the objective is minimised at
s_i = log L_i (d/ds_i = -L_i / (2 e^{s_i}) + 1/2).

Choices and differences from the public implementations:
* s starts at `init` = -0.5, LibMTL's default (auto-lambda: -0.7; nash-mtl / FAMO repo: 0).
* s is not a model parameter: it is a buffer updated by its own Adam (`BufferAdam`, lr = `lr`,
  default 0.025 = the FAMO/nash-mtl `--method-params-lr` used for UW there; no weight decay),
  from the closed-form gradient above evaluated on the step's detached losses (stored by
  `combine`, applied in `after_step`). LibMTL instead trains s with the model's own optimizer and
  learning rate; the gradient is the same, the optimizer settings are not.
"""

from __future__ import annotations

import torch

from rlmtl.weighting.adam import BufferAdam
from rlmtl.weighting.base import StepContext, Weighting, WeightingResult, register_weighting


@register_weighting("uncertainty")
class Uncertainty(Weighting):
    """Kendall et al.'s homoscedastic-uncertainty weighting.

    Args:
        num_tasks: K.
        init: initial log-variance s (LibMTL: -0.5).
        lr: learning rate of the Adam that trains s (0.025).

    State: `log_variance` [K], its Adam moments, `step_losses` [K] (the losses seen by the last combine).
    """

    def __init__(self, num_tasks: int, init: float = -0.5, lr: float = 0.025) -> None:
        super().__init__(num_tasks)
        self.register_buffer("log_variance", torch.full((num_tasks,), float(init)))
        self.register_buffer("step_losses", torch.zeros(num_tasks))
        self.log_variance_optimizer = BufferAdam((num_tasks,), lr=lr)

    def combine(self, losses: torch.Tensor, context: StepContext) -> WeightingResult:
        """losses [K] -> loss = sum_i w_i L_i + s_i / 2 with w_i = 1 / (2 e^{s_i}) [K]."""
        weights = 0.5 * torch.exp(-self.log_variance)
        with torch.no_grad():
            self.step_losses.copy_(losses.detach().float())
        loss = (weights * losses).sum() + 0.5 * self.log_variance.sum()
        return WeightingResult(weights=weights, loss=loss)

    @torch.no_grad()
    def after_step(self, losses_after: torch.Tensor | None, context: StepContext) -> None:
        """Adam step on s with d/ds_i = -L_i / (2 e^{s_i}) + 1/2 at this step's losses."""
        grad = 0.5 - self.step_losses * 0.5 * torch.exp(-self.log_variance)
        self.log_variance_optimizer.step(self.log_variance, grad)
