"""DB-MTL (Lin et al., arXiv 2308.12029): max-norm balancing, EMA buffer, head weights, resume, engine."""

from functools import partial

import pytest
import torch
from toy_mtl import ToyProblem, replay, resumed_copy

from rlmtl.weighting import StepContext, make_weighting


def context(task_grads: torch.Tensor, step: int = 0) -> StepContext:
    return StepContext(step=step, lr=0.0, shared_parameters=[], task_grads=task_grads)


def test_first_step_balances_every_task_to_the_largest_log_gradient_norm():
    db = make_weighting("db_mtl", 3)
    grads = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.1, 0.0], [1.0, 1.0, 1.0]])
    losses = torch.tensor([1.0, 0.01, 2.0])
    result = db.combine(losses, context(grads))
    log_grads = grads / (losses + 1e-8)[:, None]
    torch.testing.assert_close(db.grad_buffer, log_grads)  # the EMA starts at the first gradient
    norms = log_grads.norm(dim=1)
    alpha = norms.max() / (norms + 1e-8)
    scaled_norms = (alpha[:, None] * log_grads).norm(dim=1)
    torch.testing.assert_close(scaled_norms, torch.full((3,), float(norms.max())))
    torch.testing.assert_close(result.shared_grad, (alpha[:, None] * log_grads).sum(0))
    torch.testing.assert_close(result.weights, alpha / (losses + 1e-8))


def test_ema_buffer_after_two_steps_matches_the_formula():
    beta, sigma = 0.9, 0.5
    db = make_weighting("db_mtl", 2, {"beta": beta, "sigma": sigma})
    g1, g2 = torch.tensor([[1.0, 2.0], [0.5, -1.0]]), torch.tensor([[-1.0, 0.0], [2.0, 2.0]])
    l1, l2 = torch.tensor([0.5, 2.0]), torch.tensor([0.25, 4.0])
    db.combine(l1, context(g1, step=0))
    result = db.combine(l2, context(g2, step=1))
    h1, h2 = g1 / (l1 + 1e-8)[:, None], g2 / (l2 + 1e-8)[:, None]
    expected = h2 + (beta / 2**sigma) * (h1 - h2)  # step k = 2
    torch.testing.assert_close(db.grad_buffer, expected)
    norms = expected.norm(dim=1)
    torch.testing.assert_close(result.shared_grad, ((norms.max() / (norms + 1e-8))[:, None] * expected).sum(0))


def test_zero_init_and_unscaled_heads_reproduce_libmtl():
    db = make_weighting("db_mtl", 2, {"zero_init": True, "scale_heads": False})
    grads, losses = torch.tensor([[1.0, 0.0], [0.0, 3.0]]), torch.tensor([2.0, 1.0])
    result = db.combine(losses, context(grads))
    torch.testing.assert_close(db.grad_buffer, 0.1 * grads / losses[:, None])
    torch.testing.assert_close(result.weights, 1 / (losses + 1e-8))


def test_check_flags_non_positive_losses():
    db = make_weighting("db_mtl", 2)
    db.combine(torch.tensor([1.0, 2.0]), context(torch.ones(2, 3)))
    db.check()
    db.combine(torch.tensor([1.0, -2.0]), context(torch.ones(2, 3), step=1))
    with pytest.raises(ValueError, match="task 1"):
        db.check()


def test_state_dict_resume_is_exact_from_the_empty_placeholder():
    torch.manual_seed(0)
    steps = [(torch.rand(3) + 0.1, context(torch.randn(3, 5), step)) for step in range(6)]
    make = partial(make_weighting, "db_mtl", 3)
    assert make().grad_buffer.shape == (3, 0)  # what the resumed method starts from
    original, resumed = resumed_copy(make, steps[:3])
    state = original.state_dict()
    assert state["grad_buffer"].shape == (3, 5)
    for a, b in replay([original, resumed], steps[3:]):
        assert torch.equal(a.shared_grad, b.shared_grad) and torch.equal(a.weights, b.weights)
    with pytest.raises(RuntimeError, match="size mismatch"):  # a real shape mismatch still fails
        original.load_state_dict({**state, "grad_buffer": torch.zeros(3, 4)})


def test_trains_through_the_engine_with_alpha_scaled_heads():
    toy = ToyProblem(target_scale=[1.0, 10.0, 0.1])
    db = make_weighting("db_mtl", 3)

    def check(result):
        assert torch.isfinite(result.weights).all() and torch.isfinite(result.shared_grad).all()
        head_grad = torch.autograd.grad(toy.losses()[1], toy.heads[1].weight)[0]  # the engine freed its graph
        torch.testing.assert_close(toy.heads[1].weight.grad, result.weights[1] * head_grad)

    toy.run(db, steps=5, lr=0.01, check=check)
    assert db.grad_buffer.shape == (3, sum(p.numel() for p in toy.trunk.parameters()))
    db.check()
