"""GradDrop: same-sign coordinates kept whole, one sign per coordinate, keep rate = purity, state, engine."""

import pytest
import torch
from toy_mtl import ToyProblem

from rlmtl.weighting import StepContext, make_weighting
from rlmtl.weighting.methods.graddrop import sign_dropout


def context(grads: torch.Tensor) -> StepContext:
    return StepContext(step=0, lr=0.0, shared_parameters=[], task_grads=grads)


def test_same_sign_coordinates_give_the_plain_sum_exactly():
    torch.manual_seed(0)
    magnitudes = torch.rand(4, 500) * 10.0 ** torch.randint(-8, 2, (1, 500))  # tiny ones too
    signs = torch.where(torch.rand(500) < 0.5, -1.0, 1.0)  # one sign per coordinate
    grads = magnitudes * signs
    method = make_weighting("graddrop", 4)
    for _ in range(5):
        result = method.combine(torch.zeros(4), context(grads))
        assert torch.equal(result.shared_grad, grads.sum(dim=0))
    torch.testing.assert_close(result.weights, torch.ones(4))


def test_each_coordinate_keeps_one_sign_at_the_purity_rate():
    torch.manual_seed(1)
    size = 20000
    # every coordinate: +3 and -1 (purity P = (1 + 2/4) / 2 = 0.75), or the random mix below
    grads = torch.tensor([3.0, -1.0, 0.0]).unsqueeze(1).repeat(1, size)
    shared = make_weighting("graddrop", 3).combine(torch.zeros(3), context(grads)).shared_grad
    assert set(shared.unique().tolist()) <= {3.0, -1.0}
    assert abs((shared > 0).float().mean().item() - 0.75) < 0.015

    grads = torch.randn(5, size)
    shared = make_weighting("graddrop", 5).combine(torch.zeros(5), context(grads)).shared_grad
    positive = grads.clamp(min=0).sum(dim=0)
    negative = grads.clamp(max=0).sum(dim=0)
    took_positive = torch.isclose(shared, positive)
    assert (took_positive | torch.isclose(shared, negative)).all()  # never a mix of signs
    purity = 0.5 * (1 + grads.sum(dim=0) / grads.abs().sum(dim=0))
    assert abs(took_positive.float().mean().item() - purity.mean().item()) < 0.015


def test_leak_and_uniform_draw():
    grads = torch.tensor([[1.0, -2.0], [-3.0, 4.0]])
    torch.testing.assert_close(sign_dropout(grads, torch.tensor([0.0, 0.99]), leak=1.0), grads.sum(dim=0))
    # P = [0.25, 0.667]: U = 0.0 keeps the positive part of column 0, U = 0.99 the negative of column 1
    torch.testing.assert_close(sign_dropout(grads, torch.tensor([0.0, 0.99])), torch.tensor([1.0, -2.0]))
    torch.testing.assert_close(sign_dropout(grads, torch.tensor([0.0, 0.99]), leak=0.5), torch.tensor([1.0 - 1.5, -2.0 + 2.0]))
    with pytest.raises(ValueError, match="leak"):
        make_weighting("graddrop", 2, {"leak": 2.0})


def test_state_dict_round_trip_gives_identical_outputs():
    method = make_weighting("graddrop", 3, {"leak": 0.1})
    fresh = make_weighting("graddrop", 3, {"leak": 0.1})
    fresh.load_state_dict(method.state_dict())
    grads = torch.randn(3, 50)
    torch.manual_seed(5)
    first = method.combine(torch.zeros(3), context(grads)).shared_grad
    torch.manual_seed(5)
    assert torch.equal(first, fresh.combine(torch.zeros(3), context(grads)).shared_grad)


def test_through_multitask_backward():
    toy = ToyProblem()
    start = toy.total_loss()
    toy.run(make_weighting("graddrop", 3), steps=5, check=toy.assert_shared_grad_written)
    assert toy.total_loss() < start
