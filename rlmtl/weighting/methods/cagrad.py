"""CAGrad: Liu, Liu, Jin, Stone, Liu, "Conflict-Averse Gradient Descent for Multi-task Learning",
NeurIPS 2021, arXiv 2110.14048.

Rule (as in the official code and LibMTL): with GG = G G^T [K, K], g0 = mean_i g_i,
|g0| = sqrt(mean(GG) + 1e-8) (mean(GG) = |g0|^2 exactly), c = calpha |g0| + 1e-8,

    w = argmin over the simplex of  w^T GG 1/K + c sqrt(w^T GG w + 1e-8)     (= g_w . g0 + c |g_w|)
    d = g0 + c / (|g_w| + 1e-8) g_w,  g_w = sum_i w_i g_i,

which is the direction maximising min_i g_i . d within the ball |d - g0| <= c. `rescale`
(official): 0 -> d, 1 -> d / (1 + calpha^2), 2 -> d / (1 + calpha).

Scaling: `scale_by_num_tasks=False` (default) returns d as above, a MEAN-scale gradient like
LibMTL's CAGrad (whose other defaults, calpha 0.5 and rescale 1, are used here);
`scale_by_num_tasks=True` multiplies by K, as the CAGrad/FAMO/nash-mtl repositories do "to match
the sum loss" (their default c is 0.4). Either way the heads get their own unweighted gradients
(weights = ones), as in all three.

Deviation: the official code solves for w with scipy SLSQP on the CPU (a host sync every step,
and SLSQP's default absolute tolerance makes it stop early when gradients are small). Here the
same convex problem, divided by trace(GG) / K (which leaves its argmin unchanged, the 1e-8
constants included), is solved on the device with a fixed number of operations
(`solvers.cagrad_simplex_weights`): `solver_iters` log-barrier Newton iterations find which w_i
are zero, then the KKT conditions on that support are solved in closed form. With the default 16
iterations the objective is within 1e-9 (relative to calpha |g0|^2 + |F*|) of a tightly
converged SLSQP (ftol 1e-14) on random K = 2..10 problems, rank-deficient ones included
(`tests/test_weighting_cagrad.py`), where SLSQP with its default tolerance, as the official code
runs it, is far off on some of the same problems (it stops at once on small gradients).
`update_weights_every` = n > 1 solves for w every n steps only and reuses it in between (the
direction is still built from the current gradients). w is kept in the buffer `simplex_weights`
[K] for logging.
"""

from __future__ import annotations

import torch

from rlmtl.weighting.base import Requirements, StepContext, Weighting, WeightingResult, register_weighting
from rlmtl.weighting.solvers import cagrad_simplex_weights


@register_weighting("cagrad")
class CAGrad(Weighting):
    """Conflict-averse direction around the mean gradient.

    Args:
        num_tasks: K.
        calpha: radius c of the ball around the mean gradient, in units of |g0| (LibMTL: 0.5).
        rescale: 0 -> d, 1 -> d / (1 + calpha^2), 2 -> d / (1 + calpha) (official).
        scale_by_num_tasks: multiply d by K, as the CAGrad/FAMO/nash-mtl repositories do.
        solver_iters: log-barrier Newton iterations of the simplex solve for w.
        update_weights_every: solve for w every n steps only and reuse it in between.
    """

    requirements = Requirements(task_grads=True)

    def __init__(
        self,
        num_tasks: int,
        calpha: float = 0.5,
        rescale: int = 1,
        scale_by_num_tasks: bool = False,
        solver_iters: int = 16,
        update_weights_every: int = 1,
    ) -> None:
        super().__init__(num_tasks)
        if calpha < 0:
            raise ValueError(f"calpha must be >= 0, not {calpha}")
        if rescale not in (0, 1, 2):
            raise ValueError(f"rescale must be 0, 1 or 2, not {rescale}")
        if solver_iters < 1:
            raise ValueError(f"solver_iters must be >= 1, not {solver_iters}")
        if update_weights_every < 1:
            raise ValueError(f"update_weights_every must be >= 1, not {update_weights_every}")
        self.calpha, self.rescale, self.scale_by_num_tasks, self.solver_iters = calpha, rescale, scale_by_num_tasks, solver_iters
        self.update_weights_every = update_weights_every
        self.register_buffer("ones", torch.ones(num_tasks))
        # persistent: with update_weights_every > 1 the steps between solves reuse it (exact resume)
        self.register_buffer("simplex_weights", torch.full((num_tasks,), 1.0 / num_tasks, dtype=torch.float64))

    def solve(self, gram: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
        """w [K] (float64) on the simplex for GG = `gram` [K, K] (float64) and c = `radius`."""
        # divide the objective by s = trace / K: A = GG / s, b = A 1 / K, c / sqrt(s), eps / s
        scale = (gram.diagonal().mean() + 1e-8).clamp_min(torch.finfo(torch.float64).tiny)
        matrix = gram / scale
        return cagrad_simplex_weights(matrix, matrix.mean(dim=1), radius / scale.sqrt(), 1e-8 / scale, iterations=self.solver_iters)

    def combine(self, losses: torch.Tensor, context: StepContext) -> WeightingResult:
        grads = context.task_grads  # [K, P]
        gram = (grads @ grads.T).detach().to(torch.float64)
        radius = self.calpha * torch.sqrt(gram.mean() + 1e-8) + 1e-8  # c = calpha |g0| (+ 1e-8)
        if context.step % self.update_weights_every == 0:
            weights = self.solve(gram, radius)
            self.simplex_weights.copy_(weights)
        else:  # between solves: the last w with the current gradients and radius
            weights = self.simplex_weights
        # d = g0 + c / |g_w| g_w = (1 / K + c / |g_w| w) @ G, with |g_w|^2 = w^T GG w: one pass over G
        combined_norm = torch.sqrt((weights @ gram @ weights).clamp_min(0.0))
        coefficients = 1.0 / self.num_tasks + radius / (combined_norm + 1e-8) * weights
        if self.rescale == 1:
            coefficients = coefficients / (1 + self.calpha**2)
        elif self.rescale == 2:
            coefficients = coefficients / (1 + self.calpha)
        if self.scale_by_num_tasks:
            coefficients = coefficients * self.num_tasks
        return WeightingResult(weights=self.ones, shared_grad=coefficients.to(grads.dtype) @ grads)
