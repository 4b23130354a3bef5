"""GradNorm: the large-gradient task loses weight, slow-training tasks gain it, sum K, state, engine."""

import torch
from torch import nn

from rlmtl.weighting import MultiTaskBackward, StepContext, make_weighting


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
    method = make_weighting("gradnorm", 3)
    for step in range(3):
        method.combine(torch.rand(3) + 0.5, context(grads, step))
    fresh = make_weighting("gradnorm", 3)
    fresh.load_state_dict(method.state_dict())
    assert bool(fresh.initialized) and float(fresh.optimizer.steps) == 3
    for step in range(3, 6):
        losses = torch.rand(3) + 0.5
        assert torch.equal(method.combine(losses, context(grads, step)).weights, fresh.combine(losses, context(grads, step)).weights)
    assert torch.equal(method.task_weights, fresh.task_weights)


def test_through_multitask_backward():
    torch.manual_seed(0)
    num_tasks = 3
    trunk = nn.Sequential(nn.Linear(4, 8), nn.Tanh())
    heads = nn.ModuleList(nn.Linear(8, 1) for _ in range(num_tasks))
    method = make_weighting("gradnorm", num_tasks)
    engine = MultiTaskBackward(method, trunk.parameters(), heads.parameters())
    optimizer = torch.optim.SGD([*trunk.parameters(), *heads.parameters()], lr=0.05)
    inputs, targets = torch.randn(num_tasks, 16, 4), 3.0 ** torch.arange(num_tasks).view(-1, 1, 1) * torch.randn(num_tasks, 16, 1)

    def task_losses() -> torch.Tensor:
        return torch.stack([((heads[k](trunk(inputs[k])) - targets[k]) ** 2).mean() for k in range(num_tasks)])

    start = task_losses().sum().item()
    for _ in range(5):
        optimizer.zero_grad()
        _, result = engine.backward(task_losses())
        torch.testing.assert_close(result.weights.sum(), torch.tensor(3.0))
        assert all(torch.isfinite(p.grad).all() for p in [*trunk.parameters(), *heads.parameters()])
        optimizer.step()
        engine.after_step()
    assert not torch.allclose(method.task_weights, torch.ones(num_tasks))
    assert task_losses().sum().item() < start
