"""GradNorm: the large-gradient task loses weight, slow-training tasks gain it, sum K, state, engine."""

import torch
from toy_mtl import ToyProblem, replay, resumed_copy

from rlmtl.weighting import StepContext, make_weighting


def context(grads: torch.Tensor, step: int) -> StepContext:
    return StepContext(step=step, lr=0.0, shared_parameters=[], task_grads=grads)


def test_task_with_the_largest_gradient_loses_weight_and_weights_sum_to_k():
    torch.manual_seed(0)
    grads = torch.randn(3, 20)
    grads[0] *= 10.0  # task 0's gradient norm is much larger
    losses = torch.tensor([1.0, 2.0, 0.5])  # constant: every loss ratio stays 1
    method = make_weighting("gradnorm", 3)
    history = []
    for step in range(30):
        weights = method.combine(losses, context(grads, step)).weights
        history.append(weights)
        torch.testing.assert_close(weights.sum(), torch.tensor(3.0))
        assert (weights >= 0).all()
    torch.testing.assert_close(history[0], torch.ones(3))  # the first step's weights are the initial ones
    assert history[-1][0] < 0.5 < 1.0 < history[-1][1] and history[-1][2] > 1.0
    assert all(later[0] <= earlier[0] for earlier, later in zip(history, history[1:]))


def test_slowly_training_task_gains_weight():
    grads = torch.eye(3)  # equal gradient norms: only the training rates differ
    method = make_weighting("gradnorm", 3, {"alpha": 1.5, "lr": 0.01})
    method.combine(torch.tensor([2.0, 2.0, 2.0]), context(grads, 0))  # L(0)
    torch.testing.assert_close(method.initial_losses, torch.tensor([2.0, 2.0, 2.0]))
    for step in range(1, 10):
        weights = method.combine(torch.tensor([2.0, 1.0, 1.0]), context(grads, step)).weights
    torch.testing.assert_close(method.initial_losses, torch.tensor([2.0, 2.0, 2.0]))  # recorded once
    assert weights[0] > 1.0 > weights[1]
    torch.testing.assert_close(weights[1], weights[2])


def test_state_dict_round_trip_gives_identical_outputs():
    torch.manual_seed(1)
    grads = torch.randn(3, 10)
    steps = [(torch.rand(3) + 0.5, context(grads, step)) for step in range(6)]
    method, fresh = resumed_copy(lambda: make_weighting("gradnorm", 3), steps[:3])
    assert bool(fresh.initialized) and float(fresh.optimizer.steps) == 3
    for a, b in replay([method, fresh], steps[3:]):
        assert torch.equal(a.weights, b.weights)
    assert torch.equal(method.task_weights, fresh.task_weights)


def test_through_multitask_backward():
    toy = ToyProblem(target_scale=[1.0, 3.0, 9.0])  # task k's targets scaled by 3^k
    method = make_weighting("gradnorm", 3)
    start = toy.total_loss()

    def check(result):
        torch.testing.assert_close(result.weights.sum(), torch.tensor(3.0))
        assert all(torch.isfinite(p.grad).all() for p in toy.model.parameters())

    toy.run(method, steps=5, check=check)
    assert not torch.allclose(method.task_weights, torch.ones(3))
    assert toy.total_loss() < start
