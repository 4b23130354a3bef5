"""Uniform (equal) weighting: loss = sum_i L_i, every weight 1.

The "Equal" baseline of Auto-Lambda (Liu et al., TMLR 2022, arXiv 2202.03091) and LibMTL's `EW`;
the sum (not the mean) follows their code.
"""

from __future__ import annotations

import torch

from rlmtl.weighting.base import StepContext, Weighting, WeightingResult, register_weighting


@register_weighting("uniform")
class Uniform(Weighting):
    """Every task weighted 1."""

    def __init__(self, num_tasks: int) -> None:
        super().__init__(num_tasks)
        self.register_buffer("weights", torch.ones(num_tasks))

    def combine(self, losses: torch.Tensor, context: StepContext) -> WeightingResult:
        return WeightingResult(loss=(self.weights * losses).sum(), weights=self.weights)
