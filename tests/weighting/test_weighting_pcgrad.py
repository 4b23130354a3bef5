"""PCGrad: projections against conflicting ORIGINAL gradients, untouched non-conflicting ones, state, engine."""

import pytest
import torch
from toy_mtl import ToyProblem

from rlmtl.weighting import StepContext, make_weighting
from rlmtl.weighting.methods.pcgrad import project_conflicting, random_task_orders


def context(grads: torch.Tensor, step: int = 0) -> StepContext:
    return StepContext(step=step, lr=0.0, shared_parameters=[], task_grads=grads)


def conflicting_grads(num_tasks: int, size: int = 12, seed: int = 0) -> torch.Tensor:
    """Random gradients [K, P] where several pairs conflict (negative inner products)."""
    generator = torch.Generator().manual_seed(seed)
    grads = torch.randn(num_tasks, size, generator=generator, dtype=torch.float64)
    grads[1] = -0.8 * grads[0] + 0.3 * grads[1]
    return grads


def reference_pcgrad(grads: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
    """The paper's loop, one vector at a time; checks the projection property as it goes."""
    projected = grads.clone()
    for i in range(grads.shape[0]):
        for j in orders[i].tolist():
            dot = projected[i] @ grads[j]
            if dot < 0:
                projected[i] -= dot / (grads[j] @ grads[j]) * grads[j]
                # right after its projection, g_i' no longer conflicts with the original g_j
                assert projected[i] @ grads[j] >= -1e-10 * grads[j].norm() * projected[i].norm()
    return projected


@pytest.mark.parametrize("num_tasks", [2, 3, 5])
def test_matches_the_papers_loop_and_projects_against_original_gradients(num_tasks):
    grads = conflicting_grads(num_tasks)
    method = make_weighting("pcgrad", num_tasks)
    torch.manual_seed(7)
    orders = random_task_orders(num_tasks)
    torch.manual_seed(7)
    result = method.combine(torch.zeros(num_tasks), context(grads))
    projected = reference_pcgrad(grads, orders)
    torch.testing.assert_close(result.shared_grad, projected.sum(dim=0), rtol=1e-10, atol=1e-10)
    assert not torch.allclose(result.shared_grad, grads.sum(dim=0))  # the conflict was resolved
    torch.testing.assert_close(result.weights, torch.ones(num_tasks))
    # the same surgery in coefficient space: g_i' = W G; each row projected against every other
    coefficients = project_conflicting(grads @ grads.T, orders)
    torch.testing.assert_close(coefficients @ grads, projected, rtol=1e-10, atol=1e-10)


def test_every_projected_gradient_ends_non_conflicting_for_two_tasks():
    # with K = 2 each g_i' meets one g_j, so the final g_i' . g_j >= 0 for every pair
    for seed in range(20):
        grads = conflicting_grads(2, seed=seed)
        assert grads[0] @ grads[1] < 0
        projected = project_conflicting(grads @ grads.T, random_task_orders(2)) @ grads
        assert (projected @ grads.T).min() >= -1e-10


def test_orders_are_permutations_of_the_other_tasks():
    orders = random_task_orders(6)
    assert orders.shape == (6, 5)
    for i, row in enumerate(orders.tolist()):
        assert sorted(row) == [j for j in range(6) if j != i]


def test_non_conflicting_gradients_pass_unchanged():
    grads = torch.rand(4, 10, dtype=torch.float64) + 0.1  # all inner products positive
    result = make_weighting("pcgrad", 4).combine(torch.zeros(4), context(grads))
    torch.testing.assert_close(result.shared_grad, grads.sum(dim=0), rtol=0, atol=1e-12)


def test_mean_reduction_and_zero_gradient():
    grads = conflicting_grads(3)
    grads[2] = 0.0  # a zero gradient is skipped, not divided by
    torch.manual_seed(1)
    summed = make_weighting("pcgrad", 3).combine(torch.zeros(3), context(grads)).shared_grad
    torch.manual_seed(1)
    mean = make_weighting("pcgrad", 3, {"reduction": "mean"}).combine(torch.zeros(3), context(grads)).shared_grad
    assert torch.isfinite(summed).all()
    torch.testing.assert_close(mean, summed / 3)
    with pytest.raises(ValueError, match="reduction"):
        make_weighting("pcgrad", 3, {"reduction": "max"})


def test_state_dict_round_trip_gives_identical_outputs():
    method = make_weighting("pcgrad", 4)
    fresh = make_weighting("pcgrad", 4)
    fresh.load_state_dict(method.state_dict())
    grads = conflicting_grads(4)
    torch.manual_seed(3)
    first = method.combine(torch.zeros(4), context(grads)).shared_grad
    torch.manual_seed(3)
    second = fresh.combine(torch.zeros(4), context(grads)).shared_grad
    assert torch.equal(first, second)


def test_through_multitask_backward():
    toy = ToyProblem()
    start = toy.total_loss()
    toy.run(make_weighting("pcgrad", 3), steps=5, check=toy.assert_shared_grad_written)
    assert toy.total_loss() < start
