"""Small convex solvers on the K x K Gram matrix of the task gradients, run on its device.

Both run a fixed number of Newton iterations, so they never synchronise with the host (no
data-dependent Python branch, `solve_ex` without error checks); the caller decides whether to
read the returned residual. Everything is computed in float64: the systems are K x K, so this
costs nothing measurable and keeps ill-conditioned Gram matrices (nearly collinear gradients)
solvable.

* `nash_bargaining_weights` (Nash-MTL): alpha > 0 with (M alpha)_i = 1 / alpha_i.
* `cagrad_simplex_weights` (CAGrad): argmin over the simplex of
  w^T b + c sqrt(w^T A w + eps), the dual of CAGrad's conflict-averse direction.
"""

from __future__ import annotations

import torch

# Damped Newton takes full steps once the Newton decrement is below this (the quadratic phase of
# a self-concordant function starts below (3 - sqrt 5) / 2 = 0.38).
_FULL_STEP_DECREMENT = 0.25
# Fraction of the distance to the boundary alpha_i = 0 (or w_i = 0) a step may go.
_TO_BOUNDARY = 0.99


def _max_step_inside(point: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """Largest t <= 1 keeping `point + t * direction` >= (1 - 0.99) * point elementwise; [..., K] -> [...]."""
    ratio = torch.where(direction < 0, -point / direction, torch.full_like(point, float("inf")))
    return (_TO_BOUNDARY * ratio.amin(dim=-1)).clamp(max=1.0)


def _nash_objective(alpha: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """f(alpha) = 1/2 alpha^T M alpha - sum_i log alpha_i for a batch of points [..., K] -> [...]."""
    return 0.5 * ((alpha @ matrix) * alpha).sum(-1) - alpha.log().sum(-1)


def nash_bargaining_weights(
    gram: torch.Tensor, init: torch.Tensor | None = None, iterations: int = 40
) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve (gram @ alpha)_i = 1 / alpha_i for alpha > 0 by damped Newton.

    The equation is the stationarity condition of f(alpha) = 1/2 alpha^T M alpha - sum_i log alpha_i,
    which is strictly convex and self-concordant on alpha > 0 when M is positive semi-definite;
    it has a minimiser (and the equation a positive solution) iff f is bounded below, which fails
    e.g. when a task's gradient is zero or two gradients are exactly opposite. Each iteration takes
    the Newton step with length 1 / (1 + lambda) (lambda = Newton decrement; a full step once
    lambda < 0.25), capped at 99% of the way to alpha_i = 0.

    Args:
        gram: M [K, K], symmetric positive semi-definite (Nash-MTL normalises G G^T by its
            Frobenius norm before calling).
        init: a warm start [K] > 0 (e.g. the previous solution). The start is whichever of `init`
            and 1 / sqrt(M_ii) (the solution for orthogonal gradients) has the lower f, after
            each is rescaled to the best multiple of itself, s = sqrt(K / x^T M x).
        iterations: the fixed number of Newton iterations.

    Returns:
        alpha [K] (gram's dtype) and the residual max_i |alpha_i (M alpha)_i - 1| (a 0-dim float64
        tensor, +inf if alpha is not finite). Nothing is checked here: the caller decides.
    """
    num_tasks = gram.shape[0]
    matrix = gram.detach().to(torch.float64)
    # the solution when the gradients are orthogonal, 1 / sqrt(M_ii), and `init`: rescaled to the
    # best multiple of themselves along their ray, the one with the lower f is the start
    diagonal = matrix.diagonal()
    starts = diagonal.clamp_min(1e-12 * diagonal.amax().clamp_min(1e-300)).rsqrt().unsqueeze(0)
    if init is not None:
        starts = torch.cat([starts, init.detach().to(torch.float64).clamp_min(1e-300).unsqueeze(0)])
    curvature = ((starts @ matrix) * starts).sum(-1, keepdim=True).clamp_min(1e-300)
    starts = starts * torch.sqrt(num_tasks / curvature)
    alpha = starts.index_select(0, _nash_objective(starts, matrix).argmin().unsqueeze(0)).squeeze(0)  # no host read
    for _ in range(iterations):
        gradient = matrix @ alpha - 1.0 / alpha
        hessian = matrix + torch.diag(alpha.pow(-2))
        step = -torch.linalg.solve_ex(hessian, gradient.unsqueeze(-1))[0].squeeze(-1)
        decrement = torch.sqrt((-gradient * step).sum().clamp_min(0.0))
        length = torch.where(decrement < _FULL_STEP_DECREMENT, torch.ones_like(decrement), 1.0 / (1.0 + decrement))
        alpha = alpha + torch.minimum(length, _max_step_inside(alpha, step)) * step
    residual = (alpha * (matrix @ alpha) - 1.0).abs().amax()
    finite = torch.isfinite(alpha).all() & (alpha > 0).all()
    residual = torch.where(finite & torch.isfinite(residual), residual, torch.full_like(residual, float("inf")))
    return alpha.to(gram.dtype), residual


def cagrad_simplex_weights(
    gram: torch.Tensor,
    linear: torch.Tensor,
    radius: torch.Tensor,
    eps: torch.Tensor,
    iterations: int = 16,
    line_search: int = 16,
    final_barrier: float = 1e8,
    polish: bool = True,
) -> torch.Tensor:
    """argmin over the probability simplex of F(w) = w^T b + c sqrt(w^T A w + eps).

    F is convex (c sqrt(w^T A w + eps) is c times the norm of an affine map of w). Two stages,
    both with a fixed number of operations (no data-dependent loop, no host read):

    1. A log-barrier interior-point method: minimise t F(w) - sum_i log w_i subject to
       sum_i w_i = 1 by Newton steps on the equality-constrained KKT system, with
       t = final_barrier^(k / ramp) growing geometrically to `final_barrier` over the first 3/4 of
       the iterations (then held). The step length is chosen by a line search evaluated in
       parallel: F at `line_search` halvings of the longest step that stays 99% inside the
       simplex, plus the current point, keeping the best one.
    2. `polish` (default): the iterate's small entries tell which w_i are 0 at the optimum; on a
       guessed support S the KKT conditions have a closed-form solution (`_support_candidates`),
       which is the exact optimum when S is right. Supports from several thresholds are tried
       at once and the feasible point with the lowest F (the barrier iterate included) is kept,
       so polishing never makes the result worse. The barrier stage then only has to separate
       the zero weights from the others, which takes fewer iterations than converging in F.

    The caller should scale the problem so that A has O(1) entries (CAGrad divides A, b, c^2 and
    eps by trace(A) / K, which leaves the argmin unchanged).

    Args:
        gram: A [K, K] positive semi-definite. linear: b [K]. radius: c >= 0 (0-dim). eps: > 0 (0-dim).
    Returns:
        w [K] on the simplex (float64).
    """
    matrix, linear = gram.detach().to(torch.float64), linear.detach().to(torch.float64)
    radius = torch.as_tensor(radius, dtype=torch.float64, device=gram.device)
    eps = torch.as_tensor(eps, dtype=torch.float64, device=gram.device)
    with torch.inference_mode():  # no autograd bookkeeping on the many small operations of the loop
        weights = _compiled("cagrad_barrier", _cagrad_barrier_loop)(matrix, linear, radius, eps, iterations, line_search, final_barrier)
        if polish:
            weights = _compiled("cagrad_polish", _cagrad_polish)(matrix, linear, radius, eps, weights)
    return weights.clone()  # a normal tensor again (inference tensors cannot be saved for backward)


def _cagrad_barrier_loop(
    matrix: torch.Tensor,
    linear: torch.Tensor,
    radius: torch.Tensor,
    eps: torch.Tensor,
    iterations: int,
    line_search: int,
    final_barrier: float,
) -> torch.Tensor:
    """The interior-point iterations of `cagrad_simplex_weights` (TorchScript-compatible: the
    loop runs compiled, which halves its per-iteration overhead on small K)."""
    num_tasks = matrix.shape[0]
    weights = torch.full((num_tasks,), 1.0 / num_tasks, dtype=torch.float64, device=matrix.device)
    ones = torch.ones(num_tasks, dtype=torch.float64, device=matrix.device)
    halvings = torch.pow(0.5, torch.arange(line_search, dtype=torch.float64, device=matrix.device))
    fractions = torch.cat([halvings, torch.zeros(1, dtype=torch.float64, device=matrix.device)])  # [S + 1]
    ramp = max(1, (3 * iterations) // 4)
    for iteration in range(iterations):
        barrier = final_barrier ** (min(iteration + 1, ramp) / ramp)
        product = matrix @ weights
        norm = torch.sqrt(weights @ product + eps)
        gradient = barrier * (linear + radius * product / norm) - 1.0 / weights
        hessian = barrier * radius * (matrix / norm - torch.outer(product, product) / norm**3) + torch.diag(weights.pow(-2))
        # Newton step on {sum w = 1}: step = -H^-1 (gradient + nu 1) with 1^T step = 0
        solved = torch.linalg.solve_ex(hessian, torch.stack([gradient, ones], dim=1))[0]
        nu = -solved[:, 0].sum() / solved[:, 1].sum()
        step = -(solved[:, 0] + nu * solved[:, 1])
        ratio = torch.where(step < 0, -weights / step, torch.full_like(weights, float("inf")))
        longest = (0.99 * ratio.amin()).clamp(max=1.0)
        candidates = (weights + (longest * fractions).unsqueeze(-1) * step).clamp_min(2.2250738585072014e-308)  # [S + 1, K]
        quadratic = ((candidates @ matrix) * candidates).sum(-1)
        merit = barrier * (candidates @ linear + radius * torch.sqrt(quadratic + eps)) - candidates.log().sum(-1)
        merit = torch.nan_to_num(merit, nan=float("inf"))
        weights = candidates.index_select(0, merit.argmin().unsqueeze(0)).squeeze(0)  # no host read
        weights = weights / weights.sum()
    return weights


def _cagrad_polish(
    matrix: torch.Tensor, linear: torch.Tensor, radius: torch.Tensor, eps: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """The best of `weights` and the closed-form KKT points on the supports {i: w_i > tau max w}
    for tau in 1e-1 .. 1e-9 (F = w^T b + c sqrt(w^T A w + eps); infeasible points are dropped).

    On a support S with A_SS invertible, stationarity b_S + (c / n) A_SS w_S + nu 1 = 0 with
    n = sqrt(w^T A w + eps) and 1^T w_S = 1 gives w_S = w0 + r d, r = n / c, where
    x = A_SS^-1 b_S, y = A_SS^-1 1, w0 = y / 1^T y, d = (1^T x / 1^T y) y - x; substituting into
    n^2 = w^T A w + eps gives (c^2 - d^T A d) r^2 - 2 (w0^T A d) r - (w0^T A w0 + eps) = 0,
    whose positive roots are the candidates. Off-support rows of the systems are the identity."""
    num_tasks = matrix.shape[0]
    thresholds = torch.tensor([1e-1, 1e-2, 1e-3, 1e-4, 1e-6, 1e-9], dtype=torch.float64, device=matrix.device)
    mask = (weights.unsqueeze(0) > thresholds.unsqueeze(1) * weights.amax()).to(torch.float64)  # [T, K]
    masked = matrix * (mask.unsqueeze(2) * mask.unsqueeze(1)) + torch.diag_embed(1.0 - mask)
    solved = torch.linalg.solve_ex(masked, torch.stack([linear * mask, mask], dim=2))[0]  # [T, K, 2]
    x, y = solved[..., 0], solved[..., 1]
    base = y / y.sum(-1, keepdim=True)
    along = x.sum(-1, keepdim=True) / y.sum(-1, keepdim=True) * y - x
    base_product, along_product = base @ matrix, along @ matrix
    a0, a1, a2 = (base_product * base).sum(-1), (base_product * along).sum(-1), (along_product * along).sum(-1)
    leading = radius * radius - a2
    root = (a1 * a1 + leading * (a0 + eps)).clamp_min(0.0).sqrt()
    ratios = torch.stack([(a1 + root) / leading, (a1 - root) / leading], dim=1)  # [T, 2]
    points = (base.unsqueeze(1) + ratios.unsqueeze(-1) * along.unsqueeze(1)).reshape(-1, num_tasks)  # [2T, K]
    feasible = (ratios.reshape(-1) > 0) & (points >= 0).all(-1) & torch.isfinite(points).all(-1)
    points = torch.cat([torch.where(feasible.unsqueeze(1), points, weights.unsqueeze(0)), weights.unsqueeze(0)])
    points = points / points.sum(-1, keepdim=True)
    value = points @ linear + radius * torch.sqrt(((points @ matrix) * points).sum(-1) + eps)
    best = torch.nan_to_num(value, nan=float("inf")).argmin()
    return points.index_select(0, best.unsqueeze(0)).squeeze(0)  # no host read


_COMPILED: dict[str, object] = {}


def _compiled(name: str, function):
    """`function` compiled by TorchScript once per process."""
    if name not in _COMPILED:
        _COMPILED[name] = torch.jit.script(function)
    return _COMPILED[name]
