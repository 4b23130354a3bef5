"""HydaLearn (rlmtl's reading): main-task gains of each task's lookahead step against hand
computations, the first-order variant, the fallbacks and normalisations, engine and agent runs."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call
from toy_mtl import SharedLinear, TinyMTL, module_backward, small_agent, train_agent, train_module

from rlmtl.weighting import MultiTaskBackward, Requirements, StepContext, make_weighting
from rlmtl.weighting.methods.hydalearn import HydaLearn

K = 3
TARGET = torch.tensor([1.0, -2.0, 0.5, 1.5], dtype=torch.float64)


def conflicting_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """Task 0 (main) and task 1 share the target x.TARGET; task 2 wants the opposite."""
    x = torch.randn(K, 16, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    signs = torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64).unsqueeze(1)
    return {"x": x, "y": signs * (x @ TARGET)}


def context_for(model: nn.Module, batch, lr: float, primary=(0,), optimizer=None, step: int = 0) -> StepContext:
    losses = model(batch)
    shared = list(model.parameters())
    rows = [torch.cat([g.reshape(-1) for g in torch.autograd.grad(losses[k], shared, retain_graph=True)]) for k in range(K)]
    mask = torch.zeros(K, dtype=torch.bool)
    mask[list(primary)] = True
    return StepContext(
        step=step,
        lr=lr,
        shared_parameters=shared,
        primary_tasks=mask,
        task_grads=torch.stack(rows),
        batch=batch,
        optimizer=optimizer,
        named_parameters=dict(model.named_parameters()),
        losses_at=lambda params, b: functional_call(model, params, (b,)),
    )


def main_loss(w: torch.Tensor, batch, primary=(0,)) -> torch.Tensor:
    """Hand evaluation of sum_{j primary} mean((x_j w - y_j)^2)."""
    return sum((batch["x"][j] @ w - batch["y"][j]).pow(2).mean() for j in primary)


def test_gains_and_weights_match_a_hand_computation():
    model, batch = SharedLinear(), conflicting_batch()
    context = context_for(model, batch, lr=0.05)
    method = HydaLearn(K).double()
    gains = method.gains(context)
    w = model.w.detach()
    want = torch.stack([main_loss(w, batch) - main_loss(w - 0.05 * g, batch) for g in context.task_grads])
    torch.testing.assert_close(gains, want, rtol=1e-12, atol=1e-14)
    assert gains[0] > 0 and gains[1] > 0 and gains[2] < 0  # task 2's step increases the main loss
    weights = method.combine(model(batch), context).weights
    assert weights[2] == 0 and weights[1] > 0 and weights[0] > 0
    torch.testing.assert_close(weights, K * gains.clamp_min(0) / gains.clamp_min(0).sum())
    torch.testing.assert_close(weights.sum(), torch.tensor(float(K), dtype=torch.float64))


@pytest.mark.parametrize("primary", [(0,), (0, 2)])
def test_first_order_approximates_exact_for_small_steps(primary):
    model, batch = SharedLinear(), conflicting_batch()
    with torch.no_grad():
        model.w.copy_(0.3 * TARGET)
    context = context_for(model, batch, lr=1e-4, primary=primary)
    exact = HydaLearn(K).double().gains(context)
    first = HydaLearn(K, variant="first_order").double().gains(context)
    g_main = sum(context.task_grads[j] for j in primary)
    torch.testing.assert_close(first, 1e-4 * context.task_grads @ g_main)  # eta g_main . g_i
    assert float((first - exact).norm() / exact.norm()) < 1e-3
    # at a large step the two part ways (so the comparison above can fail)
    big = context_for(model, batch, lr=0.2, primary=primary)
    assert (
        float(
            (HydaLearn(K, variant="first_order").double().gains(big) - HydaLearn(K).double().gains(big)).norm()
            / HydaLearn(K).double().gains(big).norm()
        )
        > 1e-2
    )


def test_all_harmful_weights_only_the_main_task():
    model, batch = SharedLinear(), conflicting_batch()
    context = context_for(model, batch, lr=5.0)  # every step overshoots, even the main task's own
    method = HydaLearn(K).double()
    assert (method.gains(context) <= 0).all()
    torch.testing.assert_close(method.combine(model(batch), context).weights, torch.tensor([3.0, 0.0, 0.0], dtype=torch.float64))
    fixed = HydaLearn(K, normalise="main_fixed").double()
    torch.testing.assert_close(fixed.combine(model(batch), context).weights, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    two = HydaLearn(K).double().weights_from_gains(torch.tensor([-1.0, -2.0, 0.0]), torch.tensor([True, True, False]))
    torch.testing.assert_close(two, torch.tensor([1.5, 1.5, 0.0]))


def test_main_fixed_applies_the_ratio_rule_against_the_main_task():
    model, batch = SharedLinear(), conflicting_batch()
    context = context_for(model, batch, lr=0.05)
    method = HydaLearn(K, normalise="main_fixed").double()
    gains = method.gains(context)
    weights = method.combine(model(batch), context).weights
    torch.testing.assert_close(
        weights, torch.stack([torch.ones((), dtype=torch.float64), gains[1] / gains[0], torch.zeros((), dtype=torch.float64)])
    )


def test_optimizer_lookahead_mirrors_the_optimizer():
    model, batch = SharedLinear(), conflicting_batch()
    plain = torch.optim.SGD(model.parameters(), lr=0.05)
    context = context_for(model, batch, lr=0.05, optimizer=plain)
    torch.testing.assert_close(
        HydaLearn(K, lookahead="optimizer").double().gains(context), HydaLearn(K).double().gains(context), rtol=1e-12, atol=1e-14
    )
    momentum = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    momentum.zero_grad()
    model(conflicting_batch(1)).sum().backward()
    momentum.step()
    context = context_for(model, batch, lr=0.05, optimizer=momentum)
    buffer = momentum.state[model.w]["momentum_buffer"]
    w = model.w.detach()
    want = torch.stack([main_loss(w, batch) - main_loss(w - 0.05 * (0.9 * buffer + g), batch) for g in context.task_grads])
    torch.testing.assert_close(HydaLearn(K, lookahead="optimizer").double().gains(context), want, rtol=1e-12, atol=1e-14)


def test_loop_equals_vmap_and_requirements_follow_the_options():
    model, batch = SharedLinear(), conflicting_batch()
    context = context_for(model, batch, lr=0.05)
    torch.testing.assert_close(HydaLearn(K, vectorize=False).double().gains(context), HydaLearn(K).double().gains(context))
    assert HydaLearn(K).requirements == Requirements(primary_tasks=True, task_grads=True, functional_losses=True)
    assert HydaLearn(K, variant="first_order").requirements == Requirements(primary_tasks=True, task_grads=True)
    assert HydaLearn(K, lookahead="optimizer").requirements.optimizer
    with pytest.raises(ValueError, match="primary"):
        MultiTaskBackward(HydaLearn(K), model.parameters(), named_parameters=dict(model.named_parameters()), losses_at=lambda p, b: p)
    with pytest.raises(ValueError, match="normalise"):
        HydaLearn(K, normalise="softmax")


def run_engine(model: TinyMTL, optimizer, method, steps: int) -> list[torch.Tensor]:
    """Task 0 (main) and task 1 regress x.sum(), task 2 its negative."""
    batches = []
    for step in range(steps):
        x = torch.randn(K, 8, 4, generator=torch.Generator().manual_seed(step))
        batches.append(({"x": x, "y": torch.stack([x[0].sum(-1), x[1].sum(-1), -x[2].sum(-1)])}, None))
    return train_module(model, optimizer, module_backward(model, method, optimizer, primary_tasks=[0]), batches)


def test_update_every_keeps_the_weights_between_updates():
    torch.manual_seed(0)
    model = TinyMTL()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    method = make_weighting("hydalearn", K, {"update_every": 3})
    weights = run_engine(model, optimizer, method, 7)
    for step in (1, 2, 4, 5):
        assert torch.equal(weights[step], weights[step - 1])
    assert not torch.equal(weights[3], weights[2]) and not torch.equal(weights[6], weights[5])
    restored = HydaLearn(K)
    restored.load_state_dict(method.state_dict())
    assert torch.equal(restored.weights, weights[-1])


@pytest.mark.parametrize(
    "make_optimizer",
    [lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=1e-4)],
)
@pytest.mark.parametrize("options", [{}, {"variant": "first_order", "lookahead": "optimizer"}])
def test_through_the_engine_with_real_optimizers(make_optimizer, options):
    torch.manual_seed(0)
    model = TinyMTL()
    optimizer = make_optimizer(model.parameters())
    watched = [*model.trunk.parameters(), *model.heads[0].parameters()]  # a head weighted 0 at every step may stay put
    start = [p.detach().clone() for p in watched]
    weights = run_engine(model, optimizer, make_weighting("hydalearn", K, options), 4)
    for w in weights:
        assert torch.isfinite(w).all() and (w >= 0).all()
        torch.testing.assert_close(w.sum(), torch.tensor(float(K)))
    assert all(not torch.equal(a, p) for a, p in zip(start, watched))


@pytest.mark.parametrize("variant", ["exact", "first_order"])
def test_rlmtl_agent_three_steps_wired_like_the_trainer(variant):
    def check(result):
        assert torch.isfinite(result.weights).all()
        torch.testing.assert_close(result.weights.sum(), torch.tensor(4.0))

    train_agent(small_agent(4), make_weighting("hydalearn", 4, {"variant": variant}), primary_tasks=[0], check=check)
