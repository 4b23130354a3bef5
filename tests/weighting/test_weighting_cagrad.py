"""CAGrad: the ball constraint, the dual's argmin against scipy SLSQP, calpha = 0, scaling, state, engine."""

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from toy_mtl import ToyProblem

from rlmtl.weighting import StepContext, make_weighting


def context(grads: torch.Tensor) -> StepContext:
    return StepContext(step=0, lr=0.0, shared_parameters=[], task_grads=grads)


def conflicting_grads(num_tasks: int, size: int = 40, seed: int = 0) -> torch.Tensor:
    """[K, P] gradients of different norms, two of them nearly opposite."""
    generator = torch.Generator().manual_seed(seed)
    grads = torch.randn(num_tasks, size, generator=generator, dtype=torch.float64)
    grads = grads * torch.exp(torch.randn(num_tasks, 1, generator=generator, dtype=torch.float64))
    grads[1] = -0.9 * grads[0] + 0.2 * grads[1]
    return grads


def objective(weights: np.ndarray, gram: np.ndarray, radius: float) -> float:
    """The official dual objective: w^T GG 1/K + c sqrt(w^T GG w + 1e-8)."""
    return float(weights @ gram.mean(axis=1) + radius * np.sqrt(weights @ gram @ weights + 1e-8))


def slsqp_weights(gram: np.ndarray, radius: float) -> np.ndarray:
    """The official solver (scipy SLSQP from the uniform point), run to a tight tolerance."""
    num_tasks = gram.shape[0]
    start = np.full(num_tasks, 1.0 / num_tasks)
    constraint = {"type": "eq", "fun": lambda w: 1 - w.sum()}
    result = minimize(
        objective, start, args=(gram, radius), bounds=[(0, 1)] * num_tasks, constraints=constraint, options={"ftol": 1e-14, "maxiter": 1000}
    )
    return result.x


@pytest.mark.parametrize("seed", range(6))
def test_solver_matches_slsqp_and_direction_satisfies_its_constraint(seed):
    num_tasks = 10 if seed < 4 else 3
    grads = conflicting_grads(num_tasks, seed=seed) * (1e-2 if seed % 2 else 1.0)
    calpha = 0.5
    method = make_weighting("cagrad", num_tasks, {"calpha": calpha})
    direction = method.combine(torch.zeros(num_tasks), context(grads)).shared_grad
    gram = (grads @ grads.T).numpy()
    mean_grad = grads.mean(dim=0)
    radius = calpha * np.sqrt(gram.mean() + 1e-8) + 1e-8
    torch.testing.assert_close(torch.tensor(np.sqrt(gram.mean())), mean_grad.norm(), rtol=1e-10, atol=0)  # the code's |g0|

    # the simplex weights: objective within 1e-3 of SLSQP's, relative to its scale calpha |g0|^2
    ours = method.simplex_weights.numpy()
    assert ours.min() >= 0 and abs(ours.sum() - 1) < 1e-9
    reference = slsqp_weights(gram, radius)
    scale = calpha * gram.mean() + abs(objective(reference, gram, radius))
    assert objective(ours, gram, radius) <= objective(reference, gram, radius) + 1e-3 * scale

    # d (before the 1 / (1 + calpha^2) rescale) lies in the ball |d - g0| <= c ...
    raw = direction * (1 + calpha**2)
    assert (raw - mean_grad).norm() <= radius * (1 + 1e-9)
    # ... and improves the worst task over g0, which is in the ball too
    assert (grads @ raw).min() >= (grads @ mean_grad).min() - 1e-9


def test_solver_is_exact_on_random_problems_including_rank_deficient_ones():
    # K = 2..10 gradients of 3..200 coordinates (so some Gram matrices are singular), scales
    # 1e-4..10: the barrier stage + support polish must reach SLSQP's tight optimum
    from rlmtl.weighting.solvers import cagrad_simplex_weights

    rng = np.random.default_rng(1)
    gaps = []
    for seed in range(120):
        num_tasks = int(rng.integers(2, 11))
        grads = conflicting_grads(num_tasks, size=int(rng.integers(3, 200)), seed=seed) * float(10 ** rng.uniform(-4, 1))
        gram = (grads @ grads.T).numpy()
        radius = 0.5 * np.sqrt(gram.mean() + 1e-8) + 1e-8
        matrix = torch.tensor(gram) / (np.trace(gram) / num_tasks + 1e-8)
        scale = np.trace(gram) / num_tasks + 1e-8
        ours = cagrad_simplex_weights(matrix, matrix.mean(dim=1), torch.tensor(radius / np.sqrt(scale)), torch.tensor(1e-8 / scale)).numpy()
        assert ours.min() >= 0 and abs(ours.sum() - 1) < 1e-12
        reference = slsqp_weights(gram, radius)
        optimum = objective(reference, gram, radius)
        gaps.append((objective(ours, gram, radius) - optimum) / (0.5 * gram.mean() + abs(optimum)))
    assert max(gaps) < 1e-9, f"worst relative gap {max(gaps):.2e}"


def test_polish_never_worsens_the_barrier_iterate():
    from rlmtl.weighting.solvers import cagrad_simplex_weights

    grads = conflicting_grads(10, size=6, seed=3)  # rank 6 < K: singular supports
    gram = (grads @ grads.T).numpy()
    matrix = torch.tensor(gram) / (np.trace(gram) / 10)
    args = (matrix, matrix.mean(dim=1), torch.tensor(0.3), torch.tensor(1e-8))
    for iterations in (2, 5, 16):
        rough = cagrad_simplex_weights(*args, iterations=iterations, polish=False).numpy()
        polished = cagrad_simplex_weights(*args, iterations=iterations).numpy()
        assert objective(polished, matrix.numpy(), 0.3) <= objective(rough, matrix.numpy(), 0.3) + 1e-15


def test_calpha_zero_gives_the_mean_gradient_and_scalings():
    grads = conflicting_grads(4)
    direction = make_weighting("cagrad", 4, {"calpha": 0.0}).combine(torch.zeros(4), context(grads)).shared_grad
    torch.testing.assert_close(direction, grads.mean(dim=0), rtol=0, atol=1e-7)

    mean = make_weighting("cagrad", 4).combine(torch.zeros(4), context(grads))
    summed = make_weighting("cagrad", 4, {"scale_by_num_tasks": True}).combine(torch.zeros(4), context(grads))
    unscaled = make_weighting("cagrad", 4, {"rescale": 0}).combine(torch.zeros(4), context(grads))
    torch.testing.assert_close(summed.shared_grad, 4 * mean.shared_grad)
    torch.testing.assert_close(unscaled.shared_grad, 1.25 * mean.shared_grad)
    torch.testing.assert_close(mean.weights, torch.ones(4))  # heads keep their own gradients
    with pytest.raises(ValueError, match="rescale"):
        make_weighting("cagrad", 4, {"rescale": 3})


def test_solution_is_invariant_to_the_gradient_scale():
    # the solver works on the problem divided by trace(GG) / K: only the 1e-8 constants see the scale
    grads = conflicting_grads(5)
    big = make_weighting("cagrad", 5)
    small = make_weighting("cagrad", 5)
    first = big.combine(torch.zeros(5), context(grads * 100)).shared_grad
    second = small.combine(torch.zeros(5), context(grads)).shared_grad
    torch.testing.assert_close(big.simplex_weights, small.simplex_weights, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(first, 100 * second, rtol=1e-5, atol=1e-7)


def test_state_dict_round_trip_gives_identical_outputs():
    method = make_weighting("cagrad", 3, {"calpha": 0.4, "solver_iters": 20})
    fresh = make_weighting("cagrad", 3, {"calpha": 0.4, "solver_iters": 20})
    fresh.load_state_dict(method.state_dict())
    grads = conflicting_grads(3)
    assert torch.equal(
        method.combine(torch.zeros(3), context(grads)).shared_grad, fresh.combine(torch.zeros(3), context(grads)).shared_grad
    )


def test_through_multitask_backward():
    toy = ToyProblem()
    start = toy.total_loss()
    toy.run(make_weighting("cagrad", 3), steps=5, check=toy.assert_shared_grad_written)
    assert toy.total_loss() < start


def test_update_weights_every_reuses_the_simplex_weights_between_solves():
    from rlmtl.weighting import StepContext, make_weighting

    torch.manual_seed(0)
    method = make_weighting("cagrad", 4, {"update_weights_every": 3})
    seen = []
    for step in range(6):
        grads = torch.randn(4, 20)
        method.combine(torch.ones(4), StepContext(step=step, lr=0.1, shared_parameters=[], task_grads=grads))
        seen.append(method.simplex_weights.clone())
    assert torch.equal(seen[0], seen[1]) and torch.equal(seen[1], seen[2])
    assert not torch.equal(seen[2], seen[3]) and torch.equal(seen[3], seen[5])
