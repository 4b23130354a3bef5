"""Nash-MTL: (M alpha)_i = 1 / alpha_i, updates every n steps, loud solver failures, clipping, state, engine."""

import pytest
import torch
from toy_mtl import ToyProblem, replay, resumed_copy

from rlmtl.weighting import StepContext, make_weighting
from rlmtl.weighting.solvers import nash_bargaining_weights


def context(grads: torch.Tensor, step: int = 0) -> StepContext:
    return StepContext(step=step, lr=0.0, shared_parameters=[], task_grads=grads)


def random_grads(num_tasks: int, size: int = 30, seed: int = 0) -> torch.Tensor:
    """[K, P] gradients with norms spread over two orders of magnitude, two of them conflicting."""
    generator = torch.Generator().manual_seed(seed)
    grads = torch.randn(num_tasks, size, generator=generator, dtype=torch.float64)
    grads = grads * torch.logspace(-1, 1, num_tasks, dtype=torch.float64).unsqueeze(1)
    grads[1] = grads[1] - 0.5 * grads[0]
    return grads


@pytest.mark.parametrize("seed", range(5))
def test_solution_satisfies_the_bargaining_equation(seed):
    num_tasks = [2, 3, 5, 10, 10][seed]
    grads = random_grads(num_tasks, seed=seed)
    gram = grads @ grads.T
    normalised = gram / torch.linalg.matrix_norm(gram)
    beta, residual = nash_bargaining_weights(normalised, iterations=40)
    assert (beta > 0).all() and residual < 1e-8
    torch.testing.assert_close(normalised @ beta, 1 / beta, rtol=1e-4, atol=0)

    # the method's alpha solves the unnormalised equation, G G^T alpha = 1 / alpha
    method = make_weighting("nash_mtl", num_tasks, {"max_norm": 0.0})
    result = method.combine(torch.zeros(num_tasks), context(grads))
    assert result.shared_grad is None  # loss-level without clipping: the engine uses alpha @ G
    alpha = result.weights.double()
    torch.testing.assert_close(gram @ alpha, 1 / alpha, rtol=1e-4, atol=0)
    torch.testing.assert_close((alpha @ grads).norm() ** 2, torch.tensor(float(num_tasks), dtype=torch.float64), rtol=1e-4, atol=0)


def test_weights_change_only_every_update_weights_every_steps():
    method = make_weighting("nash_mtl", 3, {"update_weights_every": 3})
    history = [method.combine(torch.zeros(3), context(random_grads(3, seed=step), step)).weights for step in range(7)]
    for step in range(1, 7):
        changed = not torch.equal(history[step], history[step - 1])
        assert changed == (step % 3 == 0), step


def test_solver_failures_raise_instead_of_falling_back():
    grads = random_grads(3)
    grads[2] = 0.0  # a zero gradient: (M alpha)_2 = 0 can never equal 1 / alpha_2
    with pytest.raises(RuntimeError, match="residual"):
        make_weighting("nash_mtl", 3).combine(torch.zeros(3), context(grads))
    opposite = random_grads(3)
    opposite[1] = -opposite[0]  # exactly opposite gradients: (M alpha)_0 = -(M alpha)_1
    with pytest.raises(RuntimeError, match="residual"):
        make_weighting("nash_mtl", 3).combine(torch.zeros(3), context(opposite))
    # a solvable problem with too few iterations for the tolerance
    correlated = random_grads(4) + 3 * torch.randn(1, 30, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="residual"):
        make_weighting("nash_mtl", 4, {"optim_niter": 1, "tol": 1e-12}).combine(torch.zeros(4), context(correlated))
    make_weighting("nash_mtl", 4, {"tol": 1e-12}).combine(torch.zeros(4), context(correlated))  # converges with the default
    with pytest.raises(ValueError, match="solver"):
        make_weighting("nash_mtl", 3, {"solver": "cvxpy"})


def test_shared_gradient_is_clipped_to_max_norm():
    grads = random_grads(4)
    result = make_weighting("nash_mtl", 4, {"max_norm": 1.0}).combine(torch.zeros(4), context(grads))
    torch.testing.assert_close(result.shared_grad, (result.weights @ grads) / (result.weights @ grads).norm(), rtol=1e-5, atol=0)
    loose = make_weighting("nash_mtl", 4, {"max_norm": 10.0}).combine(torch.zeros(4), context(grads))
    torch.testing.assert_close(loose.shared_grad, loose.weights @ grads)  # |alpha @ G| = 2 < 10: untouched


def test_state_dict_round_trip_gives_identical_outputs():
    steps = [(torch.zeros(3), context(random_grads(3, seed=step), step)) for step in range(6)]
    method, fresh = resumed_copy(lambda: make_weighting("nash_mtl", 3, {"update_weights_every": 2}), steps[:3])
    for first, second in replay([method, fresh], steps[3:]):
        assert torch.equal(first.weights, second.weights) and torch.equal(first.shared_grad, second.shared_grad)


def test_through_multitask_backward():
    toy = ToyProblem()
    start = toy.total_loss()

    def check(result):
        toy.assert_shared_grad_written(result)
        assert toy.shared_grad().norm() <= 1.0 + 1e-5 and (result.weights > 0).all()

    toy.run(make_weighting("nash_mtl", 3), steps=5, check=check)
    assert toy.total_loss() < start
