"""FAMO (Liu et al., NeurIPS 2023): logits update, effective weights, checks, resume, engine."""

import math

import pytest
import torch
from toy_mtl import ToyProblem, assert_finite_weights, replay, resumed_copy

from rlmtl.weighting import StepContext, make_weighting


def context(step: int = 0) -> StepContext:
    return StepContext(step=step, lr=0.0, shared_parameters=[])


def test_weights_move_toward_the_task_whose_log_loss_decreases_least():
    famo = make_weighting("famo", 2)
    for t in range(30):
        losses = torch.tensor([math.exp(-0.1 * t), 1.0])  # task 0 improves fast, task 1 stagnates
        famo.combine(losses, context(t))
        famo.after_step(torch.tensor([math.exp(-0.1 * (t + 1)), 1.0]), context(t))
    z = torch.softmax(famo.logits, 0)
    assert z[1] > z[0] + 0.2


def test_effective_weights_are_normalised_z_over_gap_and_give_the_loss_gradient():
    famo = make_weighting("famo", 3, {"min_losses": [0.1, -1.0, 0.0]})
    famo.logits.copy_(torch.tensor([0.5, -0.3, 0.2]))
    theta = torch.tensor([0.7, -1.2, 2.0], requires_grad=True)
    losses = torch.stack([theta[0] ** 2 + 0.5, (theta[1] * theta[2]) ** 2, torch.exp(theta[2])])
    result = famo.combine(losses, context())
    z = torch.softmax(famo.logits, 0)
    gaps = losses.detach() - famo.min_losses
    expected = (z / gaps) / (z / gaps).sum()
    torch.testing.assert_close(result.weights, expected)
    torch.testing.assert_close(result.weights.sum(), torch.tensor(1.0))
    (grad,) = torch.autograd.grad(result.loss, theta, retain_graph=True)
    (weighted,) = torch.autograd.grad((result.weights * losses).sum(), theta)
    torch.testing.assert_close(grad, weighted)


def test_one_update_matches_hand_computed_softmax_jacobian_and_adam_with_l2():
    w_lr, gamma = 0.025, 0.01
    famo = make_weighting("famo", 3)
    w = [0.3, -0.2, 0.1]
    famo.logits.copy_(torch.tensor(w))
    before, after = [2.0, 1.0, 0.5], [1.5, 0.9, 0.5]
    famo.combine(torch.tensor(before), context())
    famo.after_step(torch.tensor(after), context())
    exps = [math.exp(v) for v in w]
    z = [e / sum(exps) for e in exps]
    delta = [math.log(b + 1e-8) - math.log(a + 1e-8) for b, a in zip(before, after)]
    jacobian = [[(z[i] if i == j else 0.0) - z[i] * z[j] for j in range(3)] for i in range(3)]  # d z_i / d w_j
    grad = [sum(jacobian[i][j] * delta[i] for i in range(3)) + gamma * w[j] for j in range(3)]
    # Adam's first step: m_hat = g, v_hat = g^2  ->  w - lr * g / (|g| + eps)
    expected = [w[j] - w_lr * grad[j] / (abs(grad[j]) + 1e-8) for j in range(3)]
    torch.testing.assert_close(famo.logits, torch.tensor(expected), rtol=0, atol=1e-6)


def test_several_updates_match_the_official_rule_with_torch_adam():
    torch.manual_seed(1)
    famo = make_weighting("famo", 4, {"min_losses": 0.05})
    official_w = torch.zeros(4, requires_grad=True)
    official_opt = torch.optim.Adam([official_w], lr=0.025, weight_decay=0.01)
    for step in range(5):
        before, after = torch.rand(4) + 0.1, torch.rand(4) + 0.1
        famo.combine(before, context(step))
        famo.after_step(after, context(step))
        delta = (before - 0.05 + 1e-8).log() - (after - 0.05 + 1e-8).log()
        (official_w.grad,) = torch.autograd.grad(torch.softmax(official_w, -1), official_w, grad_outputs=delta)
        official_opt.step()
    torch.testing.assert_close(famo.logits, official_w.detach(), rtol=1e-5, atol=1e-7)


def test_check_raises_on_non_positive_gap_without_syncing_in_combine():
    famo = make_weighting("famo", 3, {"min_losses": [0.0, 0.2, 0.0]})
    famo.combine(torch.tensor([0.5, 0.3, 0.1]), context())
    famo.check()  # all positive: no error
    famo.combine(torch.tensor([0.5, 0.1, 0.1]), context(1))  # task 1: 0.1 - 0.2 < 0, recorded, not raised
    with pytest.raises(ValueError, match="task 1 minus min_losses is not positive"):
        famo.check()
    fresh = make_weighting("famo", 2)
    fresh.combine(torch.tensor([0.5, 0.4]), context())
    fresh.after_step(torch.tensor([0.5, 0.0]), context())  # the post-step losses are checked too
    with pytest.raises(ValueError, match="task 1"):
        fresh.check()


def test_strict_checks_raise_inside_combine(monkeypatch):
    famo = make_weighting("famo", 2)
    monkeypatch.setattr(type(famo), "strict_checks", True)
    famo.combine(torch.tensor([0.5, 0.4]), context())
    with pytest.raises(ValueError, match="task 0"):
        famo.combine(torch.tensor([-0.5, 0.4]), context(1))
    with torch.no_grad():  # no autograd: only recorded
        make_weighting("famo", 2).combine(torch.tensor([-0.5, 0.4]), context())


def test_min_losses_must_have_one_value_per_task():
    with pytest.raises(ValueError, match="one per task"):
        make_weighting("famo", 3, {"min_losses": [0.0, 1.0]})


def test_state_dict_resume_is_exact():
    torch.manual_seed(2)
    steps = [(torch.rand(3) + 0.1, context(step), torch.rand(3) + 0.1) for step in range(8)]  # (before, context, after)
    original, resumed = resumed_copy(lambda: make_weighting("famo", 3, {"min_losses": 0.01}), steps[:4])
    for a, b in replay([original, resumed], steps[4:]):
        assert torch.equal(a.weights, b.weights) and torch.equal(a.loss, b.loss)
    assert torch.equal(original.logits, resumed.logits)


def test_trains_through_the_engine():
    toy = ToyProblem(target_scale=[1.0, 10.0, 0.1])
    famo = make_weighting("famo", 3)
    start = toy.losses().detach()
    toy.run(famo, steps=20, check=assert_finite_weights)  # the losses after each step reach after_step
    famo.check()
    assert not torch.equal(famo.logits, torch.zeros(3))
    assert (toy.losses().detach().log() - start.log()).mean() < 0
