"""PCGrad: Yu, Kumar, Gupta, Levine, Hausman, Finn, "Gradient Surgery for Multi-Task Learning",
NeurIPS 2020, arXiv 2001.06782.

Rule (the paper's Algorithm 1): for each task i, g_i' starts at g_i; for every other task j in a
random order, if g_i' . g_j < 0 then g_i' -= (g_i' . g_j) / |g_j|^2 g_j, always projecting onto
the ORIGINAL g_j. The shared gradient is sum_i g_i' ("sum" reduction, as LibMTL and nash-mtl's
default; `reduction="mean"` divides by K as nash-mtl's option does).

Implementation: every g_i' is a combination of the original gradients, g_i' = sum_j W_ij g_j, so
the surgery runs on the K x K Gram matrix G G^T (g_i' . g_j = (W G G^T)_ij) and the shared
gradient is one product (1^T W) G: one [K, P] x [P, K] matmul plus K - 1 batched [K, K] steps
(all tasks move through their own permutations in parallel), instead of K^2 length-P dot
products in Python loops. The projection coefficients are computed in float64.

Choices (vs. the official / library code):
* j runs over the OTHER tasks only, as in the paper; LibMTL and nash-mtl shuffle all K gradients,
  g_i itself included.
* a zero g_j is skipped (coefficient 0); nash-mtl divides by |g_j|^2 = 0, LibMTL adds 1e-8.
* the random order comes from torch's RNG on the gradients' device (`torch.rand` + argsort per
  row), not Python's `random`.
* weights = ones: the heads get their own unweighted gradients, as in LibMTL. The effective
  coefficients of the original gradients, 1^T W (LibMTL's returned `batch_weight`), are kept in
  the non-persistent buffer `combination` [K] for logging.
"""

from __future__ import annotations

import torch

from rlmtl.weighting.base import Requirements, StepContext, Weighting, WeightingResult, register_weighting


def random_task_orders(num_tasks: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Per task i, a random permutation of the other tasks: [K, K - 1] indices (torch RNG on `device`)."""
    scores = torch.rand(num_tasks, num_tasks, device=device)
    scores.fill_diagonal_(2.0)  # rand < 1, so task i itself sorts last and is cut off
    return scores.argsort(dim=1)[:, : num_tasks - 1]


def project_conflicting(gram: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
    """PCGrad's surgery in coefficient space.

    Args:
        gram: G G^T [K, K].
        orders: [K, K - 1], row i = the order in which g_i' is projected against the others.
    Returns:
        W [K, K] (float64) with g_i' = sum_j W_ij g_j.
    """
    num_tasks = gram.shape[0]
    gram = gram.detach().to(torch.float64)
    squared_norms = gram.diagonal().clamp_min(torch.finfo(torch.float64).tiny)
    rows = torch.arange(num_tasks, device=gram.device)
    coefficients = torch.eye(num_tasks, dtype=torch.float64, device=gram.device)
    for position in range(orders.shape[1]):
        other = orders[:, position]  # [K]: the task each g_i' meets at this position
        dots = (coefficients * gram[other]).sum(dim=1)  # g_i' . g_other(i)
        coefficients[rows, other] -= dots.clamp(max=0.0) / squared_norms[other]
    return coefficients


@register_weighting("pcgrad")
class PCGrad(Weighting):
    """Projecting conflicting gradients.

    Args:
        num_tasks: K.
        reduction: "sum" (default) or "mean" of the projected gradients g_i'.
    """

    requirements = Requirements(task_grads=True)

    def __init__(self, num_tasks: int, reduction: str = "sum") -> None:
        super().__init__(num_tasks)
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', not {reduction!r}")
        self.reduction = reduction
        self.register_buffer("ones", torch.ones(num_tasks))
        self.register_buffer("combination", torch.ones(num_tasks), persistent=False)

    def combine(self, losses: torch.Tensor, context: StepContext) -> WeightingResult:
        grads = context.task_grads  # [K, P]
        gram = grads @ grads.T
        coefficients = project_conflicting(gram, random_task_orders(self.num_tasks, grads.device))
        combination = coefficients.sum(dim=0)  # [K]: shared grad = sum_i g_i' = combination @ G
        if self.reduction == "mean":
            combination = combination / self.num_tasks
        combination = combination.to(grads.dtype)
        self.combination.copy_(combination)
        return WeightingResult(weights=self.ones, shared_grad=combination @ grads)
