"""Virtual optimizer steps: the parameters the real optimizer WOULD produce, without touching it.

Auto-Lambda's virtual step, HydaLearn's and TAG's lookaheads must mirror the optimizer the run
really uses (the official Auto-Lambda code only knows SGD and reads `param_groups[0]`; see
shared/reference/weighting.md §3.8). Supported exactly, per parameter group: `torch.optim.SGD`
(momentum, dampening, nesterov, weight decay) and `torch.optim.Adam` / `AdamW` (bias correction,
L2 vs decoupled weight decay; not amsgrad). The step is pure tensor arithmetic, so it is
differentiable with respect to the gradients passed in (used by the tests' autograd references).

`step_scale` returns d(theta')/d(g) elementwise: exact for SGD; for Adam it holds the second
moment fixed at its value AFTER this step's update (it depends on g only through (1 - beta2) g^2),
the choice rlmtl documents for Auto-Lambda's finite-difference direction under Adam. Pass the
step's gradients: without them the pre-step moment is used, which is 0 before the first step
and makes the scale -lr/eps.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from torch.func import vmap

Params = dict[str, torch.Tensor]


def _groups_by_param(optimizer: torch.optim.Optimizer) -> dict[int, dict[str, Any]]:
    return {id(p): group for group in optimizer.param_groups for p in group["params"]}


def _check_supported(optimizer: torch.optim.Optimizer) -> str:
    if isinstance(optimizer, torch.optim.AdamW):
        kind = "adamw"
    elif isinstance(optimizer, torch.optim.Adam):
        kind = "adam"
    elif isinstance(optimizer, torch.optim.SGD):
        kind = "sgd"
    else:
        raise TypeError(f"cannot mirror optimizer {type(optimizer).__name__}: lookahead supports SGD, Adam and AdamW")
    for group in optimizer.param_groups:
        if group.get("amsgrad") or group.get("maximize"):
            raise TypeError(f"cannot mirror {type(optimizer).__name__} with amsgrad/maximize")
    return kind


def virtual_step(optimizer: torch.optim.Optimizer, parameters: dict[str, nn.Parameter], grads: Params) -> Params:
    """theta' for every named parameter given `grads` (names missing from `grads` do not move)."""
    kind = _check_supported(optimizer)
    groups = _groups_by_param(optimizer)
    updated: Params = {}
    for name, param in parameters.items():
        grad = grads.get(name)
        group = groups.get(id(param))
        if grad is None or group is None:
            updated[name] = param
            continue
        state = optimizer.state.get(param, {})
        updated[name] = _sgd(param, grad, group, state) if kind == "sgd" else _adam(param, grad, group, state, decoupled=kind == "adamw")
    return updated


def step_scale(optimizer: torch.optim.Optimizer, parameters: dict[str, nn.Parameter], grads: Params | None = None, exact: bool = False) -> Params:
    """d(theta')/d(g) per element (a tensor per parameter); see the module docstring.

    With `exact=True` (needs `grads`) Adam's derivative also includes the second moment's own
    dependence on g, in closed form: d/dg' [m_hat / (sqrt(v_hat) + eps)] =
    (1 - beta1) / (b1 D) - m_hat (1 - beta2) g' / (b2 D^2 sqrt(v_hat)), D = sqrt(v_hat) + eps."""
    kind = _check_supported(optimizer)
    groups = _groups_by_param(optimizer)
    scales: Params = {}
    for name, param in parameters.items():
        group = groups.get(id(param))
        if group is None:
            continue
        state = optimizer.state.get(param, {})
        lr = group["lr"]
        if kind == "sgd":
            momentum, dampening = group["momentum"], group["dampening"]
            first = state.get("momentum_buffer") is None
            factor = 1.0 if (momentum == 0 or first) else 1.0 - dampening
            if group["nesterov"] and momentum:
                factor = factor * (1.0 + momentum)
            scales[name] = torch.full_like(param, -lr * factor)
        else:
            beta1, beta2 = group["betas"]
            step = float(state["step"]) + 1 if "step" in state else 1.0
            exp_avg_sq = state.get("exp_avg_sq", torch.zeros_like(param))
            grad = None if grads is None else grads.get(name)
            if grad is None:  # the pre-step moment, bias-corrected for the steps it has seen
                denominator = (exp_avg_sq / (1 - beta2 ** (step - 1)) if step > 1 else exp_avg_sq).sqrt() + group["eps"]
            else:
                if group["weight_decay"] and kind == "adam":
                    grad = grad + group["weight_decay"] * param
                updated = beta2 * exp_avg_sq + (1 - beta2) * grad * grad
                root = (updated / (1 - beta2**step)).sqrt()
                denominator = root + group["eps"]
                if exact:
                    exp_avg = beta1 * state["exp_avg"] + (1 - beta1) * grad if "exp_avg" in state else (1 - beta1) * grad
                    first = exp_avg / (1 - beta1**step)
                    # where v_hat = 0 the moment's path vanishes (g' = 0 there): keep only the first term
                    moment_path = torch.where(root > 0, first * (1 - beta2) * grad / ((1 - beta2**step) * denominator**2 * root.clamp_min(1e-30)), torch.zeros_like(root))
                    scales[name] = -lr * ((1 - beta1) / (1 - beta1**step) / denominator - moment_path)
                    continue
            scales[name] = -lr * (1 - beta1) / (1 - beta1**step) / denominator
    return scales


def _sgd(param: torch.Tensor, grad: torch.Tensor, group: dict[str, Any], state: dict[str, Any]) -> torch.Tensor:
    d_p = grad + group["weight_decay"] * param if group["weight_decay"] else grad
    momentum = group["momentum"]
    if momentum:
        buffer = state.get("momentum_buffer")
        buffer = d_p if buffer is None else momentum * buffer + (1 - group["dampening"]) * d_p
        d_p = d_p + momentum * buffer if group["nesterov"] else buffer
    return param - group["lr"] * d_p


def _adam(param: torch.Tensor, grad: torch.Tensor, group: dict[str, Any], state: dict[str, Any], decoupled: bool) -> torch.Tensor:
    beta1, beta2 = group["betas"]
    lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
    step = float(state["step"]) + 1 if "step" in state else 1.0
    base = param
    if weight_decay:
        if decoupled:
            base = param * (1 - lr * weight_decay)
        else:
            grad = grad + weight_decay * param
    exp_avg = beta1 * state["exp_avg"] + (1 - beta1) * grad if "exp_avg" in state else (1 - beta1) * grad
    exp_avg_sq = beta2 * state["exp_avg_sq"] + (1 - beta2) * grad * grad if "exp_avg_sq" in state else (1 - beta2) * grad * grad
    denominator = (exp_avg_sq / (1 - beta2**step)).sqrt() + eps
    return base - lr * (exp_avg / (1 - beta1**step)) / denominator


def losses_at_many(
    losses_at: Callable[[Params, Any], torch.Tensor],
    varying: Params,
    fixed: Params,
    batch: Any,
    vectorize: bool = True,
) -> torch.Tensor:
    """Losses at S parameter sets: `varying` {name: [S, *shape]}, `fixed` {name: tensor} shared by
    all sets -> [S, K].

    vectorize=True: one `torch.func.vmap` over the S sets with `randomness="same"` (every set sees
    the same random numbers). vectorize=False: S calls, each replaying the RNG state the first one
    started from (so the result does not depend on the mode's random draws either)."""
    if vectorize:
        return vmap(lambda params: losses_at({**fixed, **params}, batch), randomness="same")(varying)
    first = next(iter(varying.values()))
    count = first.shape[0]
    devices = [first.device] if first.device.type == "cuda" else []
    rows = []
    for s in range(count):
        params = {**fixed, **{name: value[s] for name, value in varying.items()}}
        if s < count - 1:
            with torch.random.fork_rng(devices=devices):
                rows.append(losses_at(params, batch))
        else:
            rows.append(losses_at(params, batch))
    return torch.stack(rows)
