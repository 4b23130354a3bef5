"""The weighting engine: batched per-task gradients, gradient writing, lookahead, buffer Adam."""

import pytest
import torch
from toy_mtl import agent_batch, small_agent

from rlmtl.weighting import MultiTaskBackward, Requirements, Weighting, WeightingResult, make_weighting
from rlmtl.weighting.adam import BufferAdam
from rlmtl.weighting.lookahead import step_scale, virtual_step


def make_agent(images=False, k=4):
    agent = small_agent(k, images=images)  # torch seeded, then the batch from its global RNG
    return agent, agent_batch(k, images=images)


@pytest.mark.parametrize("images", [False, True])
def test_batched_per_task_gradients_match_autograd(images):
    agent, batch = make_agent(images)
    losses = agent.task_losses(batch)
    fast_losses, fast, heads = agent.gradient_rows(batch)  # per_task_gradients in the engine's layout
    torch.testing.assert_close(fast_losses, losses.detach())
    shared = agent.shared_parameters()
    for k in range(4):
        reference = torch.autograd.grad(losses[k], shared + agent.task_specific_parameters(), retain_graph=True)
        torch.testing.assert_close(fast[k], torch.cat([g.reshape(-1) for g in reference[: len(shared)]]), rtol=1e-5, atol=1e-6)
        for fast_head, ref_head in zip(heads, reference[len(shared) :]):
            torch.testing.assert_close(fast_head[k], ref_head[k], rtol=1e-5, atol=1e-6)


class SumViaTaskGrads(Weighting):
    """A test method that asks for task gradients and weights tasks 1, 2, 3, ..."""

    requirements = Requirements(task_grads=True)

    def combine(self, losses, context):
        assert context.task_grads.shape[0] == self.num_tasks
        return WeightingResult(weights=torch.arange(1.0, self.num_tasks + 1))


def test_task_gradient_path_equals_plain_backward_on_both_routes():
    agent, batch = make_agent()
    weights = torch.arange(1.0, 5.0)
    (weights * agent.task_losses(batch)).sum().backward()
    expected = [p.grad.clone() for p in agent.parameters()]

    batched = MultiTaskBackward.for_agent(agent, SumViaTaskGrads(4), torch.optim.SGD(agent.parameters(), lr=0.1))  # as the trainer wires it
    generic = MultiTaskBackward(SumViaTaskGrads(4), agent.shared_parameters(), agent.task_specific_parameters())
    assert batched.per_task_gradients is not None and generic.per_task_gradients is None
    for engine in (batched, generic):  # rlmtl's batched route and the generic autograd route
        agent.zero_grad(set_to_none=True)
        losses = None if engine.per_task_gradients else agent.task_losses(batch)
        engine.backward(losses, batch=batch)
        for got, want in zip((p.grad for p in agent.parameters()), expected):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_engine_checks_requirements():
    class NeedsEverything(Weighting):
        requirements = Requirements(optimizer=True)

    with pytest.raises(ValueError, match="optimizer"):
        MultiTaskBackward(NeedsEverything(2), [torch.nn.Parameter(torch.zeros(1))])

    class NeedsVal(Weighting):
        requirements = Requirements(val_batch=True)

    engine = MultiTaskBackward(NeedsVal(2), [torch.nn.Parameter(torch.zeros(1))])
    with pytest.raises(ValueError, match="val_batch"):
        engine.backward(torch.zeros(2))


@pytest.mark.parametrize(
    "make",
    [
        lambda p: torch.optim.SGD(p, lr=0.1),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3),
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
        lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=1e-2),
        lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
    ],
)
def test_virtual_step_mirrors_the_real_optimizer(make):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    optimizer = make([{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": 0.03}])
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(5, 3)).pow(2).sum().backward()
        params = dict(model.named_parameters())
        predicted = {
            n: v.detach().clone() for n, v in virtual_step(optimizer, params, {n: p.grad.clone() for n, p in params.items()}).items()
        }
        scales = step_scale(optimizer, params)
        assert all((s < 0).all() for s in scales.values())
        optimizer.step()
        for name, param in model.named_parameters():
            torch.testing.assert_close(predicted[name], param.detach(), rtol=1e-5, atol=1e-7)


def test_step_scale_is_the_derivative_of_the_virtual_step():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    for optimizer in (torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), torch.optim.SGD(model.parameters(), lr=0.1)):
        for _ in range(2):
            optimizer.zero_grad()
            model(torch.randn(4, 3)).pow(2).sum().backward()
            optimizer.step()
        params = dict(model.named_parameters())
        grads = {n: torch.randn_like(p, requires_grad=True) for n, p in params.items()}
        stepped = virtual_step(optimizer, params, grads)
        derivative = torch.autograd.grad(stepped["weight"].sum(), grads["weight"])[0]
        torch.testing.assert_close(derivative, step_scale(optimizer, params)["weight"])


def test_buffer_adam_equals_torch_adam():
    torch.manual_seed(0)
    value = torch.randn(5)
    reference = torch.nn.Parameter(value.clone())
    optimizer = torch.optim.Adam([reference], lr=0.05, weight_decay=0.01)
    ours = BufferAdam((5,), lr=0.05, weight_decay=0.01)
    for _ in range(5):
        grad = torch.randn(5)
        reference.grad = grad.clone()
        optimizer.step()
        ours.step(value, grad)
    torch.testing.assert_close(value, reference.detach())
    clone = BufferAdam((5,), lr=0.05)
    clone.load_state_dict(ours.state_dict())
    assert clone.steps.item() == 5


def test_uniform_through_the_engine_matches_sum_backward():
    agent, batch = make_agent()
    agent.task_losses(batch).sum().backward()
    expected = [p.grad.clone() for p in agent.parameters()]
    agent.zero_grad(set_to_none=True)
    engine = MultiTaskBackward(make_weighting("uniform", 4), agent.shared_parameters(), agent.task_specific_parameters())
    engine.backward(agent.task_losses(batch))
    engine.after_step()
    for got, want in zip((p.grad for p in agent.parameters()), expected):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize(
    "make", [lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.01), lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1)]
)
@pytest.mark.parametrize("warm_steps", [0, 3])
def test_exact_adam_step_scale_equals_autograd(make, warm_steps):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2).double()
    optimizer = make(model.parameters())
    for _ in range(warm_steps):
        optimizer.zero_grad()
        model(torch.randn(4, 3, dtype=torch.float64)).pow(2).sum().backward()
        optimizer.step()
    params = dict(model.named_parameters())
    grads = {n: torch.randn_like(p) for n, p in params.items()}
    leaves = {n: g.clone().requires_grad_() for n, g in grads.items()}
    stepped = virtual_step(optimizer, params, leaves)
    exact = step_scale(optimizer, params, grads, exact=True)
    for name in params:
        derivative = torch.autograd.grad(stepped[name].sum(), leaves[name], retain_graph=True)[0]
        torch.testing.assert_close(exact[name], derivative)
