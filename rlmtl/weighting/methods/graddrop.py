"""GradDrop: Chen, Ngiam, Huang, Luong, Kretzschmar, Chai, Anguelov, "Just Pick a Sign:
Optimizing Deep Multitask Models with Gradient Sign Dropout", NeurIPS 2020, arXiv 2010.06808.

Rule, per coordinate k of the shared gradient: purity P_k = 1/2 (1 + sum_i g_ik / sum_i |g_ik|)
(the probability of keeping the positive sign), U_k ~ Uniform[0, 1); task i's component survives
if it is positive and U_k < P_k, or negative and U_k >= P_k (the tie U = P has probability zero;
this way an all-positive coordinate, P = 1, and an all-negative one, P = 0, are always kept
whole). Dropped components are multiplied by `leak` (default 0, the paper's setting for
multi-task training; LibMTL's default too). Shared gradient = sum_i (masked g_i).

Where it is applied (an interpretation): the paper inserts GradDrop at an activation layer and
computes P from the batch-summed, input-sign-corrected gradients there; LibMTL only supports
that representation-level mode. Here, as in Auto-Lambda's `utils.graddrop`, it is applied to the
per-task gradients of the shared PARAMETERS (the [K, P] matrix the engine provides), one purity
per parameter coordinate. Auto-Lambda averages the masked gradients; this sums them (the scale of
uniform weighting's sum of losses). P's denominator has no epsilon (a coordinate that is zero in
every task gets P = 1/2 and stays zero), so small gradients are not dropped by the epsilon.
weights = ones: the heads get their own unweighted gradients.
"""

from __future__ import annotations

import torch

from rlmtl.weighting.base import Requirements, StepContext, Weighting, WeightingResult, register_weighting


def sign_dropout(grads: torch.Tensor, uniform: torch.Tensor, leak: float = 0.0) -> torch.Tensor:
    """GradDrop's mask applied and summed: grads [K, P], uniform [P] in [0, 1) -> shared grad [P].

    Per coordinate the mask keeps either every positive or every negative component, so the
    masked sum is the positive part's sum where U < P and the negative part's sum elsewhere:
    two passes over [K, P] and the rest on [P]."""
    positive = grads.clamp_min(0).sum(dim=0)
    negative = grads.clamp_max(0).sum(dim=0)
    magnitude = positive - negative
    purity = 0.5 * (
        1.0
        + torch.where(
            magnitude > 0, (positive + negative) / magnitude.clamp_min(torch.finfo(grads.dtype).tiny), torch.zeros_like(magnitude)
        )
    )
    kept = torch.where(uniform < purity, positive, negative)
    if leak == 0.0:
        return kept
    return leak * (positive + negative) + (1.0 - leak) * kept


@register_weighting("graddrop")
class GradDrop(Weighting):
    """Gradient sign dropout on the shared parameters' per-task gradients.

    Args:
        num_tasks: K.
        leak: factor of the dropped components, in [0, 1] (paper and LibMTL: 0).
    """

    requirements = Requirements(task_grads=True)

    def __init__(self, num_tasks: int, leak: float = 0.0) -> None:
        super().__init__(num_tasks)
        if not 0.0 <= leak <= 1.0:
            raise ValueError(f"leak must be in [0, 1], not {leak}")
        self.leak = leak
        self.register_buffer("ones", torch.ones(num_tasks))

    def combine(self, losses: torch.Tensor, context: StepContext) -> WeightingResult:
        grads = context.task_grads  # [K, P]
        uniform = torch.rand(grads.shape[1], device=grads.device, dtype=grads.dtype)
        return WeightingResult(weights=self.ones, shared_grad=sign_dropout(grads, uniform, self.leak))
