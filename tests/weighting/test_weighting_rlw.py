"""RLW (Lin et al., TMLR 2022): random simplex weights, reproducibility, scale, engine."""

import torch
from toy_mtl import ToyProblem, assert_finite_weights

from rlmtl.weighting import StepContext, make_weighting


def context(step: int = 0) -> StepContext:
    return StepContext(step=step, lr=0.0, shared_parameters=[])


def test_weights_are_softmax_of_a_standard_normal_draw():
    rlw = make_weighting("rlw", 4)
    losses = torch.tensor([1.0, 2.0, 3.0, 4.0])
    torch.manual_seed(3)
    draws = [rlw.combine(losses, context(step)) for step in range(5)]
    torch.manual_seed(3)
    expected = [torch.softmax(torch.randn(4), 0) for _ in range(5)]
    for result, want in zip(draws, expected):
        torch.testing.assert_close(result.weights, want)
        assert (result.weights > 0).all()
        torch.testing.assert_close(result.weights.sum(), torch.tensor(1.0))
        torch.testing.assert_close(result.loss, (result.weights * losses).sum())
    assert not torch.equal(draws[0].weights, draws[1].weights)


def test_reproducible_under_manual_seed_and_scale_k_sums_to_k():
    rlw = make_weighting("rlw", 3, {"scale": 3.0})
    losses = torch.ones(3)
    torch.manual_seed(7)
    first = [rlw.combine(losses, context(s)).weights for s in range(3)]
    torch.manual_seed(7)
    second = [make_weighting("rlw", 3, {"scale": 3.0}).combine(losses, context(s)).weights for s in range(3)]
    for a, b in zip(first, second):
        assert torch.equal(a, b)
        torch.testing.assert_close(a.sum(), torch.tensor(3.0))


def test_resume_with_the_rng_state_is_exact():
    original = make_weighting("rlw", 3)
    torch.manual_seed(0)
    original.combine(torch.ones(3), context(0))
    rng = torch.get_rng_state()
    resumed = make_weighting("rlw", 3)
    resumed.load_state_dict(original.state_dict())
    a = original.combine(torch.ones(3), context(1)).weights
    torch.set_rng_state(rng)
    b = resumed.combine(torch.ones(3), context(1)).weights
    assert torch.equal(a, b)


def test_trains_through_the_engine():
    toy = ToyProblem()
    before = toy.trunk[0].weight.detach().clone()
    toy.run(make_weighting("rlw", 3), steps=5, check=assert_finite_weights)
    assert not torch.equal(toy.trunk[0].weight, before)
