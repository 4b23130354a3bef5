"""Random Loss Weighting (RLW).

Lin, Ye, Xu, Zhang, Tsang, Zhang (and co-authors), "Reasonable Effectiveness of Random Weighting:
A Litmus Test for Multi-Task Learning", TMLR 2022, arXiv 2111.10603.

Every step draws fresh weights w = softmax(x), x ~ N(0, I_K) (the paper's normal-softmax variant,
the one LibMTL, nash-mtl and the FAMO repo implement), and backpropagates sum_i w_i L_i.

Choices:
* `scale` = 1.0 by default: weights sum to 1, as LibMTL's `RLW` and nash-mtl's do; `scale` = K
  makes them sum to K (comparable with `uniform`, whose weights are all 1).
* x is drawn on the losses' device with torch's global generator of that device (CPU or CUDA),
  which rlmtl's trainer saves in every checkpoint; LibMTL draws on the CPU and moves the result.
  The method itself has no state.
"""

from __future__ import annotations

import torch

from rlmtl.weighting.base import StepContext, Weighting, WeightingResult, register_weighting


@register_weighting("rlw")
class RLW(Weighting):
    """Random weights softmax(N(0, I)) [K] every step, times `scale`.

    Args:
        num_tasks: K.
        scale: sum of the weights (1.0, as LibMTL; K makes them comparable with uniform's).
    """

    def __init__(self, num_tasks: int, scale: float = 1.0) -> None:
        super().__init__(num_tasks)
        self.scale = scale

    def combine(self, losses: torch.Tensor, context: StepContext) -> WeightingResult:
        """losses [K] -> freshly drawn weights [K]."""
        draws = torch.randn(self.num_tasks, device=losses.device)
        weights = self.scale * torch.softmax(draws, dim=0)
        return WeightingResult(weights=weights, loss=(weights * losses).sum())
