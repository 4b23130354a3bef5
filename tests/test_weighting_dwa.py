"""DWA (Liu, Johns, Davison, CVPR 2019), iteration-level: warm-up, window ratios, resume, engine."""

import math

import torch
from torch import nn

from rlmtl.weighting import MultiTaskBackward, StepContext, make_weighting


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
    sequence = torch.rand(14, 3) + 0.1
    original = make_weighting("dwa", 3, {"window": 3})
    for step in range(7):
        original.combine(sequence[step], context(step))
    resumed = make_weighting("dwa", 3, {"window": 3})
    resumed.load_state_dict(original.state_dict())
    for step in range(7, 14):
        assert torch.equal(original.combine(sequence[step], context(step)).weights, resumed.combine(sequence[step], context(step)).weights)


def test_trains_through_the_engine():
    torch.manual_seed(0)
    k = 3
    trunk, heads = nn.Linear(4, 8), nn.ModuleList(nn.Linear(8, 1) for _ in range(k))
    inputs, targets = torch.randn(k, 16, 4), torch.randn(k, 16, 1)

    def losses() -> torch.Tensor:
        features = torch.tanh(trunk(inputs))
        return torch.stack([((heads[i](features[i]) - targets[i]) ** 2).mean() for i in range(k)])

    engine = MultiTaskBackward(make_weighting("dwa", k, {"window": 2}), trunk.parameters(), heads.parameters())
    optimizer = torch.optim.SGD([*trunk.parameters(), *heads.parameters()], lr=0.05)
    for step in range(8):
        optimizer.zero_grad()
        _, result = engine.backward(losses())
        assert torch.isfinite(result.weights).all()
        optimizer.step()
        engine.after_step()
    assert not torch.equal(result.weights, torch.ones(k))  # past warm-up
    torch.testing.assert_close(result.weights.sum(), torch.tensor(float(k)))
