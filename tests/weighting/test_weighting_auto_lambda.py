"""Auto-Lambda: the finite-difference meta-gradient against exact autograd references, no mutation of
the live model, auxiliary mode, update schedule, checkpoint round-trip, engine and agent runs."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.func import functional_call
from toy_mtl import SharedLinear, TinyMTL, agent_batch, module_backward, small_agent, train_agent, train_module

from rlmtl.weighting import StepContext, make_weighting
from rlmtl.weighting.lookahead import virtual_step
from rlmtl.weighting.methods.auto_lambda import AutoLambda

K = 3


def make_batch(seed: int, k: int = K, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(k, 8, 4, generator=generator, dtype=dtype)
    return {"x": x, "y": torch.sin(x.sum(-1)) + 0.1 * torch.randn(k, 8, generator=generator, dtype=dtype)}


def warmed_up(make_optimizer, steps: int = 2, seed: int = 0) -> tuple[TinyMTL, torch.optim.Optimizer]:
    """A float64 TinyMTL whose optimizer already has state (momentum buffers / Adam moments)."""
    torch.manual_seed(seed)
    model = TinyMTL().double()
    optimizer = make_optimizer(model.parameters())
    for s in range(steps):
        optimizer.zero_grad()
        model(make_batch(100 + s)).sum().backward()
        optimizer.step()
    optimizer.zero_grad()
    return model, optimizer


def context_for(
    model: nn.Module, optimizer: torch.optim.Optimizer, batch, val, primary: torch.Tensor | None = None, step: int = 0
) -> StepContext:
    return StepContext(
        step=step,
        lr=optimizer.param_groups[0]["lr"],
        shared_parameters=list(model.parameters()),
        primary_tasks=primary,
        batch=batch,
        val_batch=val,
        optimizer=optimizer,
        named_parameters=dict(model.named_parameters()),
        losses_at=lambda params, b: functional_call(model, params, (b,)),
    )


def autograd_meta_gradient(
    model: nn.Module, optimizer: torch.optim.Optimizer, lambdas: torch.Tensor, batch, val, primary: torch.Tensor, stepper=None
) -> torch.Tensor:
    """Exact dL_val(theta'(lambda))/dlambda by autograd: theta' built from grads that are functions of lambda."""
    named = dict(model.named_parameters())
    lam = lambdas.detach().clone().requires_grad_()
    grads = torch.autograd.grad((lam * model(batch)).sum(), list(named.values()), create_graph=True)
    grads = dict(zip(named, grads))
    stepped = stepper(named, grads) if stepper is not None else virtual_step(optimizer, named, grads)
    val_loss = (functional_call(model, stepped, (val,)) * primary).sum()
    return torch.autograd.grad(val_loss, lam)[0]


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got - want).norm() / want.norm())


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3),
        lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
    ],
)
@pytest.mark.parametrize("primary", [None, [True, False, True]])
def test_meta_gradient_matches_autograd_under_sgd_momentum(make_optimizer, primary):
    model, optimizer = warmed_up(make_optimizer)
    method = AutoLambda(K).double()
    method.lambdas.copy_(torch.tensor([0.1, 0.3, 0.7]))
    batch, val = make_batch(1), make_batch(2)
    mask = None if primary is None else torch.tensor(primary)
    got = method.meta_gradient(model(batch), context_for(model, optimizer, batch, val, mask))
    want = autograd_meta_gradient(
        model, optimizer, method.lambdas, batch, val, torch.ones(K, dtype=torch.float64) if mask is None else mask.double()
    )
    assert relative_error(got, want) < 1e-3, (got, want)


def test_plain_sgd_meta_gradient_equals_the_official_formula():
    """Official: theta' = theta - a (mu buf + g + wd theta); eps = 0.01/||d||; grad = -a (L(theta + eps d) - L(theta - eps d)) / (2 eps)."""
    model, optimizer = warmed_up(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3))
    method = AutoLambda(K).double()
    batch, val = make_batch(1), make_batch(2)
    got = method.meta_gradient(model(batch), context_for(model, optimizer, batch, val))

    alpha, mu, wd = 0.1, 0.9, 1e-3
    named = dict(model.named_parameters())
    grads = torch.autograd.grad((method.lambdas * model(batch)).sum(), list(named.values()))
    with torch.no_grad():
        stepped = {n: p - alpha * (mu * optimizer.state[p]["momentum_buffer"] + g + wd * p) for (n, p), g in zip(named.items(), grads)}
    leaves = {n: t.clone().requires_grad_() for n, t in stepped.items()}
    d = torch.autograd.grad(functional_call(model, leaves, (val,)).sum(), list(leaves.values()))
    eps = 0.01 / torch.cat([x.reshape(-1) for x in d]).norm()
    plus = functional_call(model, {n: p.detach() + eps * x for (n, p), x in zip(named.items(), d)}, (batch,))
    minus = functional_call(model, {n: p.detach() - eps * x for (n, p), x in zip(named.items(), d)}, (batch,))
    official = -alpha * (plus - minus) / (2 * eps)
    torch.testing.assert_close(got, official.detach(), rtol=1e-9, atol=1e-12)


def test_meta_gradient_matches_autograd_under_adamw_with_second_moment_held():
    model, optimizer = warmed_up(lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1), steps=3)
    method = AutoLambda(K, jacobian="held").double()
    batch, val = make_batch(1), make_batch(2)
    got = method.meta_gradient(model(batch), context_for(model, optimizer, batch, val))
    group = optimizer.param_groups[0]
    (beta1, beta2), lr, eps, wd = group["betas"], group["lr"], group["eps"], group["weight_decay"]

    def held_step(named, grads):
        """AdamW's step with the second moment fixed at its post-update value (bias-corrected), by hand."""
        stepped = {}
        for name, param in named.items():
            state = optimizer.state[param]
            t = float(state["step"]) + 1
            g = grads[name].detach()
            held = ((beta2 * state["exp_avg_sq"] + (1 - beta2) * g * g) / (1 - beta2**t)).sqrt() + eps
            first = (beta1 * state["exp_avg"] + (1 - beta1) * grads[name]) / (1 - beta1**t)
            stepped[name] = param * (1 - lr * wd) - lr * first / held
        return stepped

    def true_point_held_jacobian(named, grads):
        """theta' is the real AdamW step; its dependence on g goes through the held-moment step only."""
        real = virtual_step(optimizer, named, {n: g.detach() for n, g in grads.items()})
        linear = held_step(named, grads)
        return {n: real[n].detach() + linear[n] - linear[n].detach() for n in named}

    ones = torch.ones(K, dtype=torch.float64)
    want = autograd_meta_gradient(model, optimizer, method.lambdas, batch, val, ones, stepper=true_point_held_jacobian)
    assert relative_error(got, want) < 1e-3, (got, want)
    # jacobian="exact" matches the full autograd meta-gradient (second moment differentiated too)
    full = autograd_meta_gradient(model, optimizer, method.lambdas, batch, val, ones)
    exact = AutoLambda(K).double().meta_gradient(model(batch), context_for(model, optimizer, batch, val))  # the default
    assert relative_error(exact, full) < 1e-3, (exact, full)
    assert relative_error(got, full) > 1e-3  # the two options really differ under Adam


class WithIdleParameter(TinyMTL):
    """TinyMTL plus a parameter whose gradient is exactly 0 (Adam's first step then divides 0 by 0)."""

    def __init__(self) -> None:
        super().__init__()
        self.idle = nn.Parameter(torch.ones(2))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return super().forward(batch) + 0.0 * self.idle.sum()


def test_first_adam_step_meta_gradient_is_exact_and_finite():
    """No optimizer state yet (the run's first step): the default matches autograd; "held" is ~1e3x too large."""
    torch.manual_seed(0)
    model = WithIdleParameter().double()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    batch, val = make_batch(1), make_batch(2)
    context = context_for(model, optimizer, batch, val)
    got = AutoLambda(K).double().meta_gradient(model(batch), context)
    assert torch.isfinite(got).all()
    moving = {n: p for n, p in model.named_parameters() if n != "idle"}  # idle's gradient is 0: it never moves

    def step_all_but_idle(named, grads):
        return {**virtual_step(optimizer, moving, {n: grads[n] for n in moving}), "idle": named["idle"]}

    want = autograd_meta_gradient(
        model,
        optimizer,
        torch.full((K,), 0.1, dtype=torch.float64),
        batch,
        val,
        torch.ones(K, dtype=torch.float64),
        stepper=step_all_but_idle,
    )
    assert relative_error(got, want) < 1e-3, (got, want)
    held = AutoLambda(K, jacobian="held").double().meta_gradient(model(batch), context)
    assert held.abs().max() > 1e3 * got.abs().max()


def test_combine_leaves_model_and_optimizer_bit_identical():
    model, optimizer = warmed_up(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9))
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: optimizer.state[p]["momentum_buffer"].clone() for n, p in model.named_parameters()}
    method = AutoLambda(K).double()
    batch, val = make_batch(1), make_batch(2)
    before = method.lambdas.clone()
    result = method.combine(model(batch), context_for(model, optimizer, batch, val))
    for name, param in model.named_parameters():
        assert torch.equal(param.detach(), params[name])
        assert torch.equal(optimizer.state[param]["momentum_buffer"], buffers[name])
        assert param.grad is None
    assert not torch.equal(method.lambdas, before)
    torch.testing.assert_close(result.weights, method.lambdas)


def test_detached_losses_are_recomputed_with_the_same_result():
    """On the per-task-gradient route the engine hands over losses without a graph."""
    model, optimizer = warmed_up(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9))
    method = AutoLambda(K).double()
    batch, val = make_batch(1), make_batch(2)
    context = context_for(model, optimizer, batch, val)
    torch.testing.assert_close(method.meta_gradient(model(batch).detach(), context), method.meta_gradient(model(batch), context))
    looped = AutoLambda(K, vectorize=False).double()
    torch.testing.assert_close(looped.meta_gradient(model(batch), context), method.meta_gradient(model(batch), context))


def test_auxiliary_mode_raises_helpful_and_lowers_harmful_tasks():
    """Task 0 is primary; task 1 has the same target (its step helps task 0), task 2 the opposite one."""
    generator = torch.Generator().manual_seed(0)
    direction = torch.tensor([1.0, -2.0, 0.5, 1.5], dtype=torch.float64)

    def batch(seed: int, sign2: float = -1.0):
        x = torch.randn(K, 16, 4, generator=generator.manual_seed(seed), dtype=torch.float64)
        y = x @ direction * torch.tensor([1.0, 1.0, sign2], dtype=torch.float64).unsqueeze(1)
        return {"x": x, "y": y}

    model = SharedLinear()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    method = AutoLambda(K, meta_lr=0.01).double()
    primary = torch.tensor([True, False, False])
    train, val = batch(1), batch(2)
    context = context_for(model, optimizer, train, val, primary)
    grad = method.meta_gradient(model(train), context)
    assert grad[1] < 0 < grad[2], grad
    # only primary tasks enter the meta-loss: the other tasks' validation data is irrelevant
    scrambled = {"x": val["x"].clone(), "y": val["y"].clone()}
    scrambled["x"][1:] = torch.randn(K - 1, 16, 4, dtype=torch.float64, generator=generator)
    scrambled["y"][1:] = 100.0
    torch.testing.assert_close(
        method.meta_gradient(model(train), context_for(model, optimizer, train, scrambled, primary)), grad, rtol=0, atol=0
    )
    # and making a non-primary task primary changes it
    assert not torch.allclose(
        method.meta_gradient(model(train), context_for(model, optimizer, train, val, torch.tensor([True, False, True]))), grad
    )
    method.combine(model(train), context)
    assert method.lambdas[1] > 0.1 > method.lambdas[2]


def run_steps(model: nn.Module, optimizer, engine, seeds) -> list[torch.Tensor]:
    batches = [(make_batch(seed, dtype=torch.float32), make_batch(seed + 1000, dtype=torch.float32)) for seed in seeds]
    return train_module(model, optimizer, engine, batches)


def test_update_every_meta_steps_only_on_multiples():
    torch.manual_seed(0)
    model = TinyMTL()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    method = make_weighting("auto_lambda", K, {"update_every": 4, "meta_lr": 0.01})
    weights = run_steps(model, optimizer, module_backward(model, method, optimizer), range(9))
    previous = torch.full((K,), 0.1)
    changed = []
    for step, w in enumerate(weights):
        if not torch.equal(w, previous):
            changed.append(step)
        previous = w
    assert changed == [0, 4, 8]
    assert int(method.meta_optimizer.steps) == 3


def test_validation_batch_is_needed_on_update_steps_only():
    torch.manual_seed(0)
    model = TinyMTL()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    method = make_weighting("auto_lambda", K, {"update_every": 2})
    assert [method.uses_val_batch(step) for step in range(5)] == [True, False, True, False, True]
    assert make_weighting("auto_lambda+pcgrad", K, {}).uses_val_batch(1) and not make_weighting("famo", K).uses_val_batch(0)
    engine = module_backward(model, method, optimizer)
    train, val = make_batch(0, dtype=torch.float32), make_batch(1, dtype=torch.float32)
    with pytest.raises(ValueError, match="needs a second batch"):
        engine.backward(model(train), batch=train)  # step 0 meta-updates
    engine.backward(model(train), batch=train, val_batch=val)
    engine.after_step(None)
    optimizer.zero_grad()
    engine.backward(model(train), batch=train)  # step 1 reuses lambda: no second batch needed


def test_state_dict_round_trip_gives_identical_lambdas():
    torch.manual_seed(0)
    model = TinyMTL()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    method = AutoLambda(K, meta_lr=0.01)
    engine = module_backward(model, method, optimizer)
    run_steps(model, optimizer, engine, range(3))

    clone_model = copy.deepcopy(model)
    clone_optimizer = torch.optim.SGD(clone_model.parameters(), lr=0.1, momentum=0.9)
    clone_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    restored = AutoLambda(K, meta_lr=0.01)
    restored.load_state_dict(copy.deepcopy(method.state_dict()))
    assert set(method.state_dict()) == {"lambdas", "meta_optimizer.exp_avg", "meta_optimizer.exp_avg_sq", "meta_optimizer.steps"}
    clone_engine = module_backward(clone_model, restored, clone_optimizer)
    clone_engine.steps = engine.steps
    fresh_model = copy.deepcopy(model)
    fresh_optimizer = torch.optim.SGD(fresh_model.parameters(), lr=0.1, momentum=0.9)
    fresh_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    fresh = module_backward(fresh_model, AutoLambda(K, meta_lr=0.01), fresh_optimizer)

    original = run_steps(model, optimizer, engine, range(3, 6))
    resumed = run_steps(clone_model, clone_optimizer, clone_engine, range(3, 6))
    unrestored = run_steps(fresh_model, fresh_optimizer, fresh, range(3, 6))
    for a, b, c in zip(original, resumed, unrestored):
        assert torch.equal(a, b)
        assert not torch.equal(a, c)


@pytest.mark.parametrize(
    "make_optimizer",
    [lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-4), lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=1e-4)],
)
def test_through_the_engine_with_real_optimizers(make_optimizer):
    torch.manual_seed(0)
    model = TinyMTL()
    optimizer = make_optimizer(model.parameters())
    method = make_weighting("auto_lambda", K, {"meta_lr": 0.01})
    start = [p.detach().clone() for p in model.parameters()]
    weights = run_steps(model, optimizer, module_backward(model, method, optimizer, primary_tasks=[0]), range(4))
    assert all(torch.isfinite(w).all() for w in weights)
    assert not torch.equal(weights[-1], torch.full((K,), 0.1))
    assert all(not torch.equal(a, p) for a, p in zip(start, model.parameters()))
    method.check()


@pytest.mark.parametrize("images", [False, True])
def test_rlmtl_agent_three_steps_wired_like_the_trainer(images):
    agent = small_agent(4, images=images, augment=True)  # image augmentation on: the finite difference must see one augmentation draw

    def check(result):
        assert torch.isfinite(result.weights).all()
        assert not torch.equal(result.weights, torch.full((4,), 0.1))

    train_agent(agent, make_weighting("auto_lambda", 4), images=images, check=check)


@pytest.mark.parametrize("vectorize", [True, False])
def test_shifted_evaluations_share_one_augmentation_draw(vectorize):
    """Image augmentation runs inside the agent's forward: both finite-difference points must see the
    same draw, or their difference measures augmentation noise instead of the parameter shift."""
    from rlmtl.weighting.lookahead import losses_at_many

    agent = small_agent(2, images=True, augment=True)
    agent.train()
    batch = agent_batch(2, images=True)
    params = {n: p.detach() for n, p in agent.named_parameters()}
    losses_at = lambda p, b: functional_call(agent, p, (b,))  # noqa: E731
    assert not torch.equal(losses_at(params, batch), losses_at(params, batch))  # two draws differ
    same = losses_at_many(losses_at, {n: torch.stack([p, p, p]) for n, p in params.items()}, {}, batch, vectorize)
    assert torch.equal(same[0], same[1]) and torch.equal(same[1], same[2])


class _Recorder:
    """Wraps a BufferAdam's step to record the meta-gradients it is given."""

    def __init__(self, method: AutoLambda) -> None:
        self.grads: list[torch.Tensor] = []
        step = method.meta_optimizer.step

        def record(params, grad):
            self.grads.append(grad.clone())
            return step(params, grad)

        method.meta_optimizer.step = record


@pytest.mark.parametrize(
    "make_optimizer, warm",
    [
        (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3), 2),
        (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.5), 0),  # first step: no dampening
        (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, dampening=0.5), 2),
        (lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.1), 3),  # L2 decay enters the gradient
        (lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1), 3),
    ],
)
def test_real_lookahead_gives_the_virtual_meta_gradient(make_optimizer, warm):
    """lookahead="real" takes theta' from the real step (with the current lambda) and dtheta'/dg
    from the optimizer's updated state: the same meta-gradient as the virtual step."""
    model, optimizer = warmed_up(make_optimizer, steps=warm)
    twin_model, twin_optimizer = copy.deepcopy((model, optimizer))
    batch, val = make_batch(1), make_batch(2)
    lambdas = torch.tensor([0.1, 0.3, 0.7], dtype=torch.float64)

    virtual = AutoLambda(K).double()
    virtual.lambdas.copy_(lambdas)
    want = virtual.meta_gradient(model(batch), context_for(model, optimizer, batch, val))

    real = AutoLambda(K, lookahead="real").double()
    real.lambdas.copy_(lambdas)
    recorder = _Recorder(real)
    context = context_for(twin_model, twin_optimizer, batch, val)
    losses = twin_model(batch)
    result = real.combine(losses, context)
    torch.testing.assert_close(result.weights, lambdas)  # this step is taken with the current lambda
    assert recorder.grads == []
    twin_optimizer.zero_grad()
    (result.weights * losses).sum().backward()
    twin_optimizer.step()
    real.after_step(None, context)
    assert len(recorder.grads) == 1
    torch.testing.assert_close(recorder.grads[0], want, rtol=1e-7, atol=1e-12)
    assert not torch.equal(real.lambdas, lambdas)  # ... and the next step gets the updated one


def test_real_lookahead_trains_through_the_engine_and_refuses_misuse():
    from rlmtl.weighting.compose import Composite

    torch.manual_seed(0)
    model = TinyMTL()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    method = make_weighting("auto_lambda", K, {"meta_lr": 0.01, "lookahead": "real", "update_every": 2})
    weights = run_steps(model, optimizer, module_backward(model, method, optimizer), range(5))
    changed = [step for step in range(1, 5) if not torch.equal(weights[step], weights[step - 1])]
    assert changed == [1, 3]  # updated after steps 0 and 2, applied from the next step
    with pytest.raises(ValueError, match="lookahead"):
        make_weighting("auto_lambda", K, {"lookahead": "sideways"})
    with pytest.raises(ValueError, match="composition"):
        Composite(AutoLambda(K, lookahead="real"), make_weighting("cagrad", K))
    engine = module_backward(model, AutoLambda(K, lookahead="real"), optimizer)
    batch, val = make_batch(0, dtype=torch.float32), make_batch(1, dtype=torch.float32)
    optimizer.zero_grad()
    engine.backward(model(batch), batch=batch, val_batch=val)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    with pytest.raises(RuntimeError, match="before zero_grad"):
        engine.after_step(None)
