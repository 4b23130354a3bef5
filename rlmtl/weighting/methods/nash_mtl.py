"""Nash-MTL: Navon, Shamsian, Achituve, Maron, Kawaguchi, Chechik, Fetaya, "Multi-Task Learning as
a Bargaining Game", ICML 2022, arXiv 2202.01017.

Rule: the Nash bargaining solution is d = sum_i alpha_i g_i with alpha > 0 solving
G G^T alpha = 1 / alpha (elementwise), i.e. g_i . d = 1 / alpha_i. The losses are weighted by
alpha (loss-level: the heads get sum_i alpha_i grad L_i, the shared parameters alpha @ G), and
the shared gradient is then clipped to norm `max_norm`.

How alpha is found (deviation): the official code runs up to `optim_niter` = 20 convex-concave
iterations with cvxpy + ECOS on the CPU and, when the solver raises (e.g. ECOS not installed),
silently keeps the previous alpha (equal weights at the start; nash-mtl issue #21).
Here `solvers.nash_bargaining_weights` solves the same equation on the device by damped
Newton on f(beta) = 1/2 beta^T M beta - sum_i log beta_i, M = G G^T / |G G^T|_F (float64,
`optim_niter` = 40 Newton iterations, warm-started from the previous solution), and alpha =
beta / sqrt(|G G^T|_F) solves the unnormalised equation, as the official code's fixed point does
(its cvxpy constraint multiplies the normalised Gram matrix back by the normalisation factor).
The solver has no fallback: after every solve the relative residual max_i |alpha_i (G G^T
alpha)_i - 1| is read on the host (the ONE host synchronisation of this method, once per weight
update, i.e. every `update_weights_every` steps) and a residual above `tol` or a non-finite alpha
raises RuntimeError. There is no positive solution, so it raises, when a task's shared gradient
is zero or two tasks' gradients are exactly opposite.

`update_weights_every` = n: alpha is recomputed at the steps with step % n == 0 (the engine's
step counter, restored on resume) and kept in the `weights` buffer in between. The engine still
computes the K task gradients at every step (requirements are static), whereas the official
code skips them between updates.

`max_norm` (official default 1.0; 0 disables): the official code calls clip_grad_norm_(shared
parameters, max_norm) after backward; here the shared gradient alpha @ G is scaled by
min(1, max_norm / (|alpha @ G| + 1e-6)) on the device and returned as `shared_grad`. Since
|sum_i alpha_i g_i|^2 = alpha^T G G^T alpha = K at the solution, with K >= 2 and max_norm 1 the
shared gradient is always rescaled to norm ~1. The trainer's own `train.grad_clip` (over all
parameters, after backward) applies on top of it.
"""

from __future__ import annotations

import torch

from rlmtl.weighting.base import Requirements, StepContext, Weighting, WeightingResult, register_weighting
from rlmtl.weighting.solvers import nash_bargaining_weights

SOLVERS = ("newton",)


@register_weighting("nash_mtl")
class NashMTL(Weighting):
    """Nash bargaining weights alpha [K], solved on the device; raises when the solve fails.

    Args:
        num_tasks: K.
        update_weights_every: recompute alpha at the steps with step % n == 0, keep it in between.
        optim_niter: damped Newton iterations per solve.
        max_norm: clip the shared gradient to this norm (official 1.0; 0 disables).
        solver: the bargaining solver ("newton").
        tol: largest relative residual of a solve before it raises.
    """

    requirements = Requirements(task_grads=True)
    needs_finite_task_grads = True  # its solve raises when it does not converge (NaN input)

    def __init__(
        self,
        num_tasks: int,
        update_weights_every: int = 1,
        optim_niter: int = 40,
        max_norm: float = 1.0,
        solver: str = "newton",
        tol: float = 1e-6,
    ) -> None:
        super().__init__(num_tasks)
        if solver not in SOLVERS:
            raise ValueError(f"Nash-MTL solver must be one of {SOLVERS}, not {solver!r}")
        if update_weights_every < 1 or optim_niter < 1:
            raise ValueError(f"update_weights_every and optim_niter must be >= 1 (got {update_weights_every}, {optim_niter})")
        if max_norm < 0 or tol <= 0:
            raise ValueError(f"max_norm must be >= 0 and tol > 0 (got {max_norm}, {tol})")
        self.update_weights_every, self.optim_niter, self.max_norm, self.solver, self.tol = (
            update_weights_every,
            optim_niter,
            max_norm,
            solver,
            tol,
        )
        self.register_buffer("weights", torch.ones(num_tasks))  # alpha, used between updates
        self.register_buffer("solution", torch.ones(num_tasks, dtype=torch.float64))  # beta for M = G G^T / |G G^T|_F

    def update(self, grads: torch.Tensor) -> None:
        """Solve for alpha from the task gradients [K, P]; raises RuntimeError if the solve fails."""
        gram = (grads.detach() @ grads.detach().T).to(torch.float64)
        frobenius = torch.linalg.matrix_norm(gram)
        solution, residual = nash_bargaining_weights(gram / frobenius, init=self.solution, iterations=self.optim_niter)
        residual = float(residual)  # the one host synchronisation per solve
        if not residual <= self.tol:
            raise RuntimeError(
                f"Nash-MTL: the bargaining solver did not converge: residual max_i |alpha_i (M alpha)_i - 1| = {residual:.3g} > tol {self.tol:g} "
                f"after {self.optim_niter} Newton iterations (no positive solution exists if a task's shared gradient is zero or two are "
                "exactly opposite; otherwise raise optim_niter)"
            )
        self.solution.copy_(solution)
        self.weights.copy_(solution / frobenius.sqrt())

    def combine(self, losses: torch.Tensor, context: StepContext) -> WeightingResult:
        grads = context.task_grads  # [K, P]
        if context.step % self.update_weights_every == 0:
            self.update(grads)
        weights = self.weights.clone().to(grads.dtype)
        if self.max_norm == 0:
            return WeightingResult(weights=weights)
        shared = weights @ grads
        shared = shared * (self.max_norm / (shared.norm() + 1e-6)).clamp(max=1.0)
        return WeightingResult(weights=weights, shared_grad=shared)
