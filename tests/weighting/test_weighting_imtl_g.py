"""IMTL-G: equal projections of the combined gradient on every task's unit gradient, sum 1, engine."""

import pytest
import torch
from toy_mtl import ToyProblem

from rlmtl.weighting import StepContext, make_weighting
from rlmtl.weighting.methods.imtl_g import impartial_weights


def context(grads: torch.Tensor) -> StepContext:
    return StepContext(step=0, lr=0.0, shared_parameters=[], task_grads=grads)


@pytest.mark.parametrize("num_tasks", [2, 3, 6])
def test_combined_gradient_has_equal_projections_on_every_task_direction(num_tasks):
    generator = torch.Generator().manual_seed(num_tasks)
    grads = torch.randn(num_tasks, 30, generator=generator, dtype=torch.float64)
    grads = grads * torch.logspace(-2, 2, num_tasks, dtype=torch.float64).unsqueeze(1)  # very different norms
    alpha = make_weighting("imtl_g", num_tasks).combine(torch.zeros(num_tasks), context(grads)).weights
    torch.testing.assert_close(alpha.sum(), torch.tensor(1.0, dtype=torch.float64))
    projections = (grads / grads.norm(dim=1, keepdim=True)) @ (alpha @ grads)  # g . u_i
    torch.testing.assert_close(projections, projections.mean().expand(num_tasks), rtol=1e-9, atol=0)
    assert projections.mean() > 0
    # the paper's formula on the full gradients gives the same weights
    units = grads / grads.norm(dim=1, keepdim=True)
    differences, unit_differences = grads[:1] - grads[1:], units[:1] - units[1:]
    rest = grads[0] @ unit_differences.T @ torch.linalg.inv(differences @ unit_differences.T)
    torch.testing.assert_close(alpha[1:], rest)


def test_equal_norm_orthogonal_gradients_get_equal_weights_and_one_task_gets_one():
    alpha = impartial_weights(4.0 * torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(alpha, torch.full((3,), 1 / 3, dtype=torch.float64))
    single = make_weighting("imtl_g", 1).combine(torch.zeros(1), context(torch.randn(1, 5)))
    torch.testing.assert_close(single.weights, torch.ones(1))


def test_state_dict_round_trip_gives_identical_outputs():
    method = make_weighting("imtl_g", 3)
    fresh = make_weighting("imtl_g", 3)
    fresh.load_state_dict(method.state_dict())
    grads = torch.randn(3, 20)
    assert torch.equal(method.combine(torch.zeros(3), context(grads)).weights, fresh.combine(torch.zeros(3), context(grads)).weights)


def test_through_multitask_backward():
    toy = ToyProblem()
    start = toy.total_loss()

    def check(result):
        torch.testing.assert_close(result.weights.sum(), torch.tensor(1.0))
        torch.testing.assert_close(toy.shared_grad(), result.weights @ toy.task_grads(), rtol=1e-5, atol=1e-6)  # loss-level: alpha @ G

    toy.run(make_weighting("imtl_g", 3), steps=5, check=check)
    assert toy.total_loss() < start
