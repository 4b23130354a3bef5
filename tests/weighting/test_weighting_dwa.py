"""DWA (Liu, Johns, Davison, CVPR 2019), iteration-level: warm-up, window ratios, resume, engine."""

import math

import torch
from toy_mtl import ToyProblem, assert_finite_weights, replay, resumed_copy

from rlmtl.weighting import StepContext, make_weighting


def context(step: int) -> StepContext:
    return StepContext(step=step, lr=0.0, shared_parameters=[])


def hand_weights(previous: list[list[float]], recent: list[list[float]], temperature: float) -> torch.Tensor:
    """K softmax(r / T), r_i = mean(recent_i) / mean(previous_i), in plain Python."""
    k = len(previous[0])
    ratios = [sum(row[i] for row in recent) / sum(row[i] for row in previous) for i in range(k)]
    exps = [math.exp(r / temperature) for r in ratios]
    return torch.tensor([k * e / sum(exps) for e in exps])


def test_weights_are_one_during_warm_up_then_k_softmax_of_window_ratios():
    window, temperature = 2, 2.0
    dwa = make_weighting("dwa", 3, {"window": window, "temperature": temperature})
    losses = [[4.0, 1.0, 2.0], [3.0, 1.0, 2.5], [2.0, 1.0, 3.0], [1.0, 1.2, 3.5], [0.5, 1.0, 4.0], [0.4, 0.8, 4.5]]
    for step in range(2 * window - 1):
        result = dwa.combine(torch.tensor(losses[step]), context(step))
        assert torch.equal(result.weights, torch.ones(3))
    for step in range(2 * window - 1, len(losses)):  # steps 3, 4, 5: the ring buffer wraps at 4
        result = dwa.combine(torch.tensor(losses[step]), context(step))
        previous, recent = losses[step - 2 * window + 1 : step - window + 1], losses[step - window + 1 : step + 1]
        torch.testing.assert_close(result.weights, hand_weights(previous, recent, temperature))
        torch.testing.assert_close(result.weights.sum(), torch.tensor(3.0))
    # task 0's loss fell fastest (smallest ratio) -> smallest weight; task 2's grew -> largest
    assert result.weights[0] < result.weights[1] < result.weights[2]


def test_loss_is_the_weighted_sum():
    dwa = make_weighting("dwa", 2, {"window": 1})
    dwa.combine(torch.tensor([2.0, 1.0]), context(0))
    losses = torch.tensor([1.0, 1.0])
    result = dwa.combine(losses, context(1))
    torch.testing.assert_close(result.loss, (result.weights * losses).sum())
    assert not torch.equal(result.weights, torch.ones(2))


def test_state_dict_resume_is_exact():
    torch.manual_seed(0)
    steps = [(losses, context(step)) for step, losses in enumerate(torch.rand(14, 3) + 0.1)]
    original, resumed = resumed_copy(lambda: make_weighting("dwa", 3, {"window": 3}), steps[:7])
    for a, b in replay([original, resumed], steps[7:]):
        assert torch.equal(a.weights, b.weights)


def test_trains_through_the_engine():
    weights = ToyProblem().run(make_weighting("dwa", 3, {"window": 2}), steps=8, check=assert_finite_weights)
    assert not torch.equal(weights[-1], torch.ones(3))  # past warm-up
    torch.testing.assert_close(weights[-1].sum(), torch.tensor(3.0))
