"""Virtual optimizer steps: equal to the real optimizer's step; batched lookaheads; exact step derivative."""

import pytest
import torch
from torch import nn

from rlmtl.weighting.lookahead import step_scale, virtual_step, virtual_step_and_scale

OPTIMIZERS = {
    "sgd": lambda groups: torch.optim.SGD(groups, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    "adam": lambda groups: torch.optim.Adam(groups, lr=0.01, weight_decay=0.01),
    "adamw": lambda groups: torch.optim.AdamW(groups, lr=0.01, weight_decay=0.05),
}


class TwoLayers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = nn.Linear(5, 7), nn.Linear(7, 3)
        self.unused = nn.Linear(2, 2)  # never gets a gradient

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(torch.tanh(self.first(x)))


def model_and_optimizer(kind: str):
    torch.manual_seed(0)
    model = TwoLayers()
    groups = [{"params": [*model.first.parameters(), *model.unused.parameters()]}, {"params": model.second.parameters(), "lr": 0.003}]
    optimizer = OPTIMIZERS[kind](groups)
    for _ in range(3):  # build optimizer state
        optimizer.zero_grad()
        model(torch.randn(8, 5)).pow(2).mean().backward()
        optimizer.step()
    return model, optimizer


def fresh_grads(model) -> dict[str, torch.Tensor]:
    model.zero_grad()
    model(torch.randn(8, 5)).pow(2).mean().backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind", list(OPTIMIZERS))
def test_virtual_step_equals_the_real_step_and_leaves_the_model_alone(kind):
    model, optimizer = model_and_optimizer(kind)
    named = dict(model.named_parameters())
    grads = fresh_grads(model)
    before = {name: p.detach().clone() for name, p in named.items()}
    stepped = virtual_step(optimizer, named, grads)
    for name, p in named.items():
        torch.testing.assert_close(p.detach(), before[name], rtol=0, atol=0)
    optimizer.step()  # the real step with the same gradients
    for name, p in named.items():
        torch.testing.assert_close(stepped[name].detach(), p.detach(), rtol=1e-6, atol=1e-7, msg=name)
    assert stepped["unused.weight"] is named["unused.weight"]


@pytest.mark.parametrize("kind", ["adam", "adamw", "sgd"])
def test_batched_lookaheads_equal_one_call_each(kind):
    model, optimizer = model_and_optimizer(kind)
    named = dict(model.named_parameters())
    batches = [fresh_grads(model) for _ in range(3)]
    stacked = {name: torch.stack([g[name] for g in batches]) for name in batches[0]}
    together = virtual_step(optimizer, named, stacked)
    for s, grads in enumerate(batches):
        alone = virtual_step(optimizer, named, grads)
        for name in grads:
            torch.testing.assert_close(together[name][s], alone[name], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kind", list(OPTIMIZERS))
def test_exact_step_scale_is_the_elementwise_derivative(kind):
    model, optimizer = model_and_optimizer(kind)
    named = dict(model.named_parameters())
    grads = {name: g.double().requires_grad_() for name, g in fresh_grads(model).items()}
    for group in optimizer.param_groups:  # float64 everywhere for a tight autograd reference
        for p in group["params"]:
            p.data = p.data.double()
            for key, value in optimizer.state.get(p, {}).items():
                if key != "step":
                    optimizer.state[p][key] = value.double()
    stepped = virtual_step(optimizer, named, grads)
    scales = step_scale(optimizer, named, {n: g.detach() for n, g in grads.items()}, exact=True)
    _, shared = virtual_step_and_scale(optimizer, named, {n: g.detach() for n, g in grads.items()}, exact=True)
    for name, grad in grads.items():
        # theta' is elementwise in g, so the gradient of sum(theta') is the diagonal of the Jacobian
        (derivative,) = torch.autograd.grad(stepped[name].sum(), grad, retain_graph=True)
        torch.testing.assert_close(scales[name], derivative, rtol=1e-9, atol=1e-12, msg=name)
        torch.testing.assert_close(shared[name], derivative, rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.parametrize("decoupled", [False, True])
def test_adam_terms_take_the_step_count_as_a_device_tensor(decoupled):
    """Fused/capturable AdamW keep `step` on the accelerator: the lookahead then computes with it as
    a tensor instead of reading it (a host sync); both give the same numbers."""
    from rlmtl.weighting.lookahead import _adam_terms, _step_count

    assert torch.is_tensor(_step_count({"step": torch.tensor(3.0, device="meta")}, 1.0))
    assert _step_count({"step": torch.tensor(3.0)}, 1.0) == 4.0 and _step_count({}, 1.0) == 1.0
    generator = torch.Generator().manual_seed(0)
    param, grad, first, second = (torch.randn(5, 4, generator=generator) for _ in range(4))
    group = {"betas": (0.9, 0.999), "lr": 0.01, "eps": 1e-8, "weight_decay": 0.1}
    as_float = _adam_terms(param, grad, first, second.abs(), 4.0, group, decoupled, True, True)
    as_tensor = _adam_terms(param, grad, first, second.abs(), torch.tensor(4.0, dtype=torch.float64), group, decoupled, True, True)
    for a, b in zip(as_float, as_tensor):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-9)
