"""Composite (`a+b`): the first method's weights scale the task gradients before the second method
aggregates them; requirements merge; both states checkpoint; engine and agent runs."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from toy_mtl import assert_finite_weights, module_backward, small_agent, train_agent, train_module

from rlmtl.weighting import (
    WEIGHTINGS,
    MultiTaskBackward,
    Requirements,
    StepContext,
    Weighting,
    WeightingResult,
    make_weighting,
    register_weighting,
)
from rlmtl.weighting.compose import Composite
from rlmtl.weighting.methods.auto_lambda import AutoLambda

K = 3


class FixedWeights(Weighting):
    """Test-only first method: weights from a buffer; counts after_step calls."""

    def __init__(self, num_tasks: int, weights: tuple[float, ...] = (0.1, 1.0, 0.5)) -> None:
        super().__init__(num_tasks)
        self.register_buffer("lam", torch.tensor(weights))
        self.register_buffer("after_calls", torch.zeros((), dtype=torch.long))

    def combine(self, losses: torch.Tensor, context: StepContext) -> WeightingResult:
        return WeightingResult(weights=self.lam.clone())

    def after_step(self, losses_after: torch.Tensor | None, context: StepContext) -> None:
        self.after_calls += 1


class PickLargest(Weighting):
    """Test-only gradient method: the shared gradient is the task-gradient row of largest norm
    (nonlinear in the rows, so scaling before or after it differ); heads keep weight 1."""

    requirements = Requirements(task_grads=True)

    def __init__(self, num_tasks: int) -> None:
        super().__init__(num_tasks)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.seen_losses: torch.Tensor | None = None
        self.seen_after: torch.Tensor | None = None

    def combine(self, losses: torch.Tensor, context: StepContext) -> WeightingResult:
        self.calls += 1
        self.seen_losses = losses.detach().clone()
        grads = context.task_grads
        choice = nn.functional.one_hot(grads.norm(dim=1).argmax(), self.num_tasks).to(grads.dtype)
        return WeightingResult(weights=torch.ones(self.num_tasks, dtype=grads.dtype), shared_grad=choice @ grads)

    def after_step(self, losses_after: torch.Tensor | None, context: StepContext) -> None:
        self.seen_after = losses_after


class InverseLoss(Weighting):
    """Test-only loss-level second method: w_i = 1 / L_i of the losses it is given."""

    def combine(self, losses: torch.Tensor, context: StepContext) -> WeightingResult:
        return WeightingResult(weights=1.0 / losses.detach())


@pytest.fixture(autouse=True)
def pick_largest_registered():
    """A test-only gradient method, registered only while this module's tests run."""
    register_weighting("test_pick_largest")(PickLargest)
    yield
    WEIGHTINGS.unregister("test_pick_largest")


class SharedLinearHeads(nn.Module):
    """Shared w [4] with per-task scalar heads a_k: loss_k = mean((a_k x_k w - y_k)^2)."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Linear(4, 1, bias=False)
        self.heads = nn.Parameter(torch.ones(K))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        features = self.trunk(batch["x"]).squeeze(-1)  # [K, B]
        return (self.heads.unsqueeze(1) * features - batch["y"]).pow(2).mean(dim=1)


def scaled_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """Task 0 has by far the largest gradient unless lambda rescales it."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(K, 16, 4, generator=g)
    y = torch.stack([10.0 * x[0].sum(-1), 3.0 * x[1].sum(-1), x[2][:, 0]])
    return {"x": x, "y": y}


def engine_for(model: SharedLinearHeads, method: Weighting, optimizer: torch.optim.Optimizer | None = None) -> MultiTaskBackward:
    return module_backward(model, method, optimizer, task_parameters=[model.heads])


def test_first_weights_scale_the_task_gradients_before_the_aggregation():
    torch.manual_seed(0)
    model, batch = SharedLinearHeads(), scaled_batch()
    losses = model(batch)
    rows = [torch.autograd.grad(losses[k], [model.trunk.weight, model.heads], retain_graph=True) for k in range(K)]
    shared = torch.stack([r[0].reshape(-1) for r in rows])
    assert int(shared.norm(dim=1).argmax()) == 0  # unscaled, PickLargest would take task 0
    lam = torch.tensor([0.1, 1.0, 0.5])
    assert int((lam.unsqueeze(1) * shared).norm(dim=1).argmax()) == 1  # scaled by lambda, task 1

    composite = Composite(FixedWeights(K), PickLargest(K))
    engine_for(model, composite).backward(model(batch), batch=batch)
    torch.testing.assert_close(model.trunk.weight.grad.reshape(-1), lam[1] * shared[1])  # hand computation
    torch.testing.assert_close(model.heads.grad, sum(lam[k] * rows[k][1] for k in range(K)))  # heads: sum_i lambda_i grad L_i
    torch.testing.assert_close(composite.second.seen_losses, lam * losses.detach())


def test_weights_only_second_method_combines_multiplicatively():
    model, batch = SharedLinearHeads(), scaled_batch()
    losses = model(batch)
    result = Composite(FixedWeights(K), InverseLoss(K)).combine(losses, StepContext(step=0, lr=0.1, shared_parameters=[]))
    torch.testing.assert_close(result.weights, 1.0 / losses.detach())  # lambda * 1 / (lambda L)
    assert result.shared_grad is None and result.loss is None


def test_requirements_merge_and_make_weighting_builds_it():
    composite = make_weighting("auto_lambda+test_pick_largest", K, {"auto_lambda": {"meta_lr": 0.01}})
    assert isinstance(composite, Composite) and isinstance(composite.first, AutoLambda)
    assert composite.first.meta_optimizer.lr == 0.01
    assert composite.requirements == Requirements(val_batch=True, optimizer=True, functional_losses=True, task_grads=True)
    assert Composite(FixedWeights(K), InverseLoss(K)).requirements == Requirements()
    with pytest.raises(ValueError, match="tasks"):
        Composite(FixedWeights(K), PickLargest(K + 1))


def run_steps(model, optimizer, engine, seeds) -> list[torch.Tensor]:
    return train_module(model, optimizer, engine, [(scaled_batch(seed), scaled_batch(seed + 1000)) for seed in seeds])


def test_state_dict_round_trip_and_after_step_forwarding():
    torch.manual_seed(0)
    model = SharedLinearHeads()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    composite = Composite(AutoLambda(K, meta_lr=0.01), PickLargest(K))
    engine = engine_for(model, composite, optimizer)
    run_steps(model, optimizer, engine, range(3))
    state = composite.state_dict()
    assert {
        "first.lambdas",
        "first.meta_optimizer.exp_avg",
        "first.meta_optimizer.exp_avg_sq",
        "first.meta_optimizer.steps",
        "second.calls",
    } == set(state)
    assert int(state["second.calls"]) == 3 and int(state["first.meta_optimizer.steps"]) == 3

    clone_model = copy.deepcopy(model)
    clone_optimizer = torch.optim.SGD(clone_model.parameters(), lr=0.01, momentum=0.9)
    clone_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    restored = Composite(AutoLambda(K, meta_lr=0.01), PickLargest(K))
    restored.load_state_dict(copy.deepcopy(state))
    clone_engine = engine_for(clone_model, restored, clone_optimizer)
    clone_engine.steps = engine.steps
    for a, b in zip(run_steps(model, optimizer, engine, range(3, 5)), run_steps(clone_model, clone_optimizer, clone_engine, range(3, 5))):
        assert torch.equal(a, b)
    assert not torch.equal(composite.first.lambdas, torch.full((K,), 0.1))

    first = FixedWeights(K)
    forwarding = Composite(first, PickLargest(K))
    forwarding.combine(model(scaled_batch()), StepContext(step=0, lr=0.1, shared_parameters=[], task_grads=torch.eye(K)))
    forwarding.after_step(torch.tensor([1.0, 2.0, 3.0]), StepContext(step=0, lr=0.1, shared_parameters=[]))
    assert int(first.after_calls) == 1
    torch.testing.assert_close(forwarding.second.seen_after, torch.tensor([0.1, 2.0, 1.5]))
    with torch.no_grad():
        composite.first.lambdas[0] = float("nan")
    with pytest.raises(FloatingPointError):
        composite.check()


@pytest.mark.parametrize(
    "make_optimizer",
    [lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9), lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=1e-4)],
)
def test_auto_lambda_plus_gradient_method_through_the_engine(make_optimizer):
    torch.manual_seed(0)
    model = SharedLinearHeads()
    optimizer = make_optimizer(model.parameters())
    composite = make_weighting("auto_lambda+test_pick_largest", K, {"meta_lr": 0.01})
    start = [p.detach().clone() for p in model.parameters()]
    weights = run_steps(model, optimizer, engine_for(model, composite, optimizer), range(4))
    assert all(torch.isfinite(w).all() for w in weights)
    assert not torch.equal(weights[-1], torch.full((K,), 0.1))
    assert all(not torch.equal(a, p) for a, p in zip(start, model.parameters()))


def test_rlmtl_agent_three_steps_wired_like_the_trainer():
    """Batched per-task gradients: the losses reach Auto-Lambda without a graph and are re-evaluated."""
    composite = make_weighting("auto_lambda+test_pick_largest", 4)
    train_agent(small_agent(4), composite, check=assert_finite_weights)
    assert not torch.equal(composite.first.lambdas, torch.full((4,), 0.1))
    assert int(composite.second.calls) == 3
