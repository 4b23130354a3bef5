"""Uncertainty weighting (Kendall, Gal, Cipolla, CVPR 2018): s -> log L, gradient, resume, engine."""

import torch
from toy_mtl import ToyProblem, replay, resumed_copy

from rlmtl.weighting import StepContext, make_weighting


def context(step: int = 0) -> StepContext:
    return StepContext(step=step, lr=0.0, shared_parameters=[])


def test_log_variance_converges_to_log_loss_on_constant_losses():
    # sum_i L_i / (2 e^{s_i}) + s_i / 2 is minimised at s_i = log L_i
    losses = torch.tensor([4.0, 0.25, 1.0])
    uw = make_weighting("uncertainty", 3, {"lr": 0.05})
    for step in range(800):
        result = uw.combine(losses, context(step))
        uw.after_step(None, context(step))
    torch.testing.assert_close(uw.log_variance, losses.log(), rtol=0, atol=0.03)
    torch.testing.assert_close(result.weights, 0.5 * torch.exp(-uw.log_variance))


def test_update_equals_adam_on_the_autograd_gradient_of_the_objective():
    init, lr = -0.5, 0.025
    uw = make_weighting("uncertainty", 2)
    reference = torch.full((2,), init, requires_grad=True)
    optimizer = torch.optim.Adam([reference], lr=lr)
    torch.manual_seed(0)
    for step in range(4):
        losses = torch.rand(2) * 3
        uw.combine(losses, context(step))
        uw.after_step(None, context(step))
        optimizer.zero_grad()
        (losses / (2 * reference.exp()) + reference / 2).sum().backward()
        optimizer.step()
    torch.testing.assert_close(uw.log_variance, reference.detach(), rtol=1e-5, atol=1e-7)


def test_initial_weights_and_loss_form():
    uw = make_weighting("uncertainty", 2)
    losses = torch.tensor([2.0, 3.0])
    result = uw.combine(losses, context())
    s = torch.full((2,), -0.5)
    torch.testing.assert_close(result.weights, 1 / (2 * s.exp()))
    torch.testing.assert_close(result.loss, (losses / (2 * s.exp()) + s / 2).sum())


def test_state_dict_resume_is_exact():
    torch.manual_seed(1)
    steps = [(losses, context(step)) for step, losses in enumerate(torch.rand(10, 3) + 0.1)]
    original, resumed = resumed_copy(lambda: make_weighting("uncertainty", 3), steps[:5])  # after_step follows every combine
    for a, b in replay([original, resumed], steps[5:]):
        assert torch.equal(a.weights, b.weights) and torch.equal(a.loss, b.loss)


def test_trains_through_the_engine():
    toy = ToyProblem()
    uw = make_weighting("uncertainty", 3)

    def check(result):
        assert torch.isfinite(result.weights).all()
        torch.testing.assert_close(
            toy.shared_grad(), toy.grad_of((result.weights * toy.losses()).sum())
        )  # the model sees sum_i w_i grad L_i

    toy.run(uw, steps=5, check=check)
    assert not torch.equal(uw.log_variance, torch.full((3,), -0.5))
