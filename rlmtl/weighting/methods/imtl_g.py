"""IMTL-G: Liu, Li, Kuang, Xue, Chen, Yang, Liao, Zhang, "Towards Impartial Multi-task Learning",
ICLR 2021 (openreview.net/forum?id=IMPnRXEWpvr; no arXiv version).

Rule (gradient half of IMTL, as nash-mtl's `IMTLG`): with u_i = g_i / |g_i|,
D = g_1 - g_{2..K} [K-1, P], U = u_1 - u_{2..K} [K-1, P],

    alpha_{2..K} = g_1 U^T (D U^T)^{-1},   alpha_1 = 1 - sum_{i>=2} alpha_i,

the weights (summing to 1) whose combination g = sum_i alpha_i g_i has the same projection onto
every task's unit gradient (g . u_i equal for all i). Loss-level: only the weights are returned,
so the engine gives the shared parameters alpha @ G and the heads sum_i alpha_i grad L_i, as
nash-mtl's loss sum_i alpha_i L_i does (LibMTL's `IMTL` also learns IMTL-L loss scales and
applies alpha to the shared gradients only; that is not done here).

Choices: everything is computed from the Gram matrix G G^T (one [K, P] x [P, K] product), and
the (K-1) x (K-1) system is solved with `torch.linalg.solve_ex` in float64 (no error
check, so no host sync): a singular D U^T (e.g. two identical gradients) gives non-finite
weights rather than nash-mtl's 1e-8 ridge retry or an exception. A zero gradient's unit vector
is taken as 0 (its norm is clamped to the smallest positive float). K = 1 gives alpha = [1].
"""

from __future__ import annotations

import torch

from rlmtl.weighting.base import Requirements, StepContext, Weighting, WeightingResult, register_weighting


def impartial_weights(gram: torch.Tensor) -> torch.Tensor:
    """IMTL-G's alpha [K] (float64, sums to 1) from the Gram matrix G G^T [K, K].

    Every product needed is one of C_ab = g_a . u_b = (G G^T)_ab / |g_b|:
    (D U^T)_jk = C_11 - C_j1 - C_1k + C_jk and (g_1 U^T)_k = C_11 - C_1k (j, k >= 2).
    """
    gram = gram.detach().to(torch.float64)
    norms = gram.diagonal().clamp_min(0.0).sqrt().clamp_min(torch.finfo(torch.float64).tiny)
    projections = gram / norms  # C [K, K]
    target = projections[0, 0] - projections[0, 1:]  # g_1 U^T [K-1]
    system = target.unsqueeze(0) - projections[1:, :1] + projections[1:, 1:]  # D U^T [K-1, K-1]
    # x (D U^T) = g_1 U^T  <=>  (D U^T)^T x^T = (g_1 U^T)^T
    rest = torch.linalg.solve_ex(system.T, target.unsqueeze(-1))[0].squeeze(-1)
    return torch.cat([(1.0 - rest.sum()).unsqueeze(0), rest])


@register_weighting("imtl_g")
class IMTLG(Weighting):
    """Impartial gradient weights: equal projections of the update on every task's direction."""

    requirements = Requirements(task_grads=True)

    def combine(self, losses: torch.Tensor, context: StepContext) -> WeightingResult:
        grads = context.task_grads  # [K, P]
        if self.num_tasks == 1:
            return WeightingResult(weights=torch.ones(1, dtype=grads.dtype, device=grads.device))
        return WeightingResult(weights=impartial_weights(grads @ grads.T).to(grads.dtype))
