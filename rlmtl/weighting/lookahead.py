"""Virtual optimizer steps: the parameters the real optimizer WOULD produce, without touching it.

Auto-Lambda's virtual step, HydaLearn's and TAG's lookaheads must mirror the optimizer the run
really uses (the official Auto-Lambda code only knows SGD and reads `param_groups[0]`; see
official auto-lambda `auto_lambda.py`, `virtual_step`). Supported exactly, per parameter group: `torch.optim.SGD`
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

from typing import Any, Callable, Collection

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
    """theta' for every named parameter given `grads` (names missing from `grads` do not move).

    A gradient may carry leading batch dimensions ([S, *shape]: S lookaheads at once)."""
    return virtual_step_and_scale(optimizer, parameters, grads, scale=False)[0]


def virtual_step_and_scale(
    optimizer: torch.optim.Optimizer, parameters: dict[str, nn.Parameter], grads: Params, scale: bool = True, exact: bool = False
) -> tuple[Params, Params]:
    """(theta', d theta'/d g) for the parameters in `grads` in one pass that shares the moment
    updates; the scale is `step_scale(..., grads, exact)` (empty when `scale=False`).

    Computed per parameter: concatenating the parameters into one vector was measured slower on
    CPU (the copies cost more than the saved dispatches once tensors exceed the caches)."""
    kind = _check_supported(optimizer)
    groups = _groups_by_param(optimizer)
    updated: Params = dict(parameters)
    scales: Params = {}
    for name, param in parameters.items():
        grad, group = grads.get(name), groups.get(id(param))
        if grad is None or group is None:
            continue
        state = optimizer.state.get(param, {})
        if kind == "sgd":
            updated[name] = _sgd(param, grad, group, state)
            continue
        step = _step_count(state, 1.0)
        updated[name], step_scales = _adam_terms(
            param, grad, state.get("exp_avg"), state.get("exp_avg_sq"), step, group, kind == "adamw", scale, exact
        )
        if step_scales is not None:
            scales[name] = step_scales
    if scale and kind == "sgd":
        scales = step_scale(optimizer, {n: p for n, p in parameters.items() if n in grads}, grads, exact)
    return updated, scales


def _adam_terms(
    param: torch.Tensor,
    grad: torch.Tensor,
    exp_avg: torch.Tensor | None,
    exp_avg_sq: torch.Tensor | None,
    step: float | torch.Tensor,
    group: dict[str, Any],
    decoupled: bool,
    scale: bool,
    exact: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Adam/AdamW's next parameters for `grad` (step number `step`), and optionally the elementwise
    d theta'/d g of `step_scale` (exact: second moment's own path included).

    Written with PyTorch's own operation order (denominator sqrt(v) / sqrt(b2) + eps, step size
    lr / b1) and fused operations (lerp, addcmul, addcdiv): every operation reads the whole
    parameter, so on a CPU their number is the cost. Out of place, so it stays differentiable."""
    beta1, beta2 = group["betas"]
    lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
    bias1, bias2 = 1 - beta1**step, 1 - beta2**step
    base = param
    if weight_decay:
        if decoupled:
            base = param * (1 - lr * weight_decay)
        else:
            grad = grad.add(param, alpha=weight_decay)
    first = torch.lerp(exp_avg, grad, 1 - beta1) if exp_avg is not None else grad * (1 - beta1)
    second = torch.addcmul(exp_avg_sq * beta2, grad, grad, value=1 - beta2) if exp_avg_sq is not None else grad.square() * (1 - beta2)
    root = second.sqrt() / bias2**0.5  # sqrt(v_hat)
    denominator = root + eps
    stepped = _addcdiv(base, first, denominator, -lr / bias1)
    if not scale:
        return stepped, None
    return stepped, _adam_scale(first, grad, root, denominator, bias1, bias2, group, exact)


def _adam_scale(
    first: torch.Tensor,
    grad: torch.Tensor,
    root: torch.Tensor,
    denominator: torch.Tensor,
    bias1: float | torch.Tensor,
    bias2: float | torch.Tensor,
    group: dict[str, Any],
    exact: bool,
) -> torch.Tensor:
    """d theta'/d g of an Adam/AdamW step from its updated first moment, the (effective) gradient,
    sqrt(v_hat) = `root` and D = root + eps:
    -lr (1 - beta1) / (b1 D)  [+ lr (1 - beta2) / (b1 b2) m g / (D^2 sqrt(v_hat)) if exact]."""
    beta1, beta2 = group["betas"]
    lr = group["lr"]
    first_term = torch.as_tensor(-lr * (1 - beta1) / bias1, dtype=first.dtype, device=first.device)
    if not exact:
        return first_term / denominator
    # where v_hat = 0, g = 0 too, so the clamped product gives the moment path its limit 0
    product = (denominator * root).clamp_min(torch.finfo(root.dtype).tiny)
    inner = _addcdiv(first_term, first * grad, product, lr * (1 - beta2) / (bias1 * bias2))
    return inner / denominator


def _step_count(state: dict[str, Any], offset: float = 0.0) -> float | torch.Tensor:
    """Adam's step counter (+ `offset`; 0 without state) as a float, or as a 0-dim tensor where the
    optimizer keeps it on an accelerator (fused or capturable Adam/AdamW): reading that would make
    the host wait for the device."""
    step = state.get("step", 0.0)
    if torch.is_tensor(step) and step.device.type != "cpu":
        return step.to(torch.float64) + offset
    return float(step) + offset


def _addcdiv(start: torch.Tensor, numerator: torch.Tensor, divisor: torch.Tensor, value: float | torch.Tensor) -> torch.Tensor:
    """start + value * numerator / divisor; `value` may be a 0-dim tensor (no host read)."""
    if torch.is_tensor(value):
        return start + (numerator / divisor) * value.to(numerator.dtype)
    return torch.addcdiv(start, numerator, divisor, value=value)


def without_history(optimizer: torch.optim.Optimizer, parameters: dict[str, nn.Parameter]) -> set[str]:
    """Names of the parameters the optimizer keeps no state for yet (their next step is their
    first); `applied_step_scale` needs it for SGD with dampening, whose first step differs."""
    return {name for name, param in parameters.items() if not optimizer.state.get(param)}


@torch.no_grad()
def applied_step_scale(
    optimizer: torch.optim.Optimizer,
    parameters: dict[str, nn.Parameter],
    grads: Params,
    before: Params,
    exact: bool = False,
    first_steps: Collection[str] = frozenset(),
) -> Params:
    """d theta'/d g of the step `optimizer` has JUST taken with `grads`, read from its updated
    state: the values `step_scale(optimizer, parameters, grads, exact)` gives before the step,
    without recomputing the moments. `before`: the parameters before the step (Adam's L2 weight
    decay adds weight_decay * theta to g); `first_steps`: `without_history` before the step."""
    kind = _check_supported(optimizer)
    groups = _groups_by_param(optimizer)
    scales: Params = {}
    for name, grad in grads.items():
        param = parameters[name]
        group, state = groups.get(id(param)), optimizer.state.get(param, {})
        if group is None:
            continue
        if kind == "sgd":
            scales[name] = torch.full_like(param, -group["lr"] * _sgd_factor(group, name in first_steps))
            continue
        beta1, beta2 = group["betas"]
        step = _step_count(state)
        bias1, bias2 = 1 - beta1**step, 1 - beta2**step
        if group["weight_decay"] and kind == "adam":
            grad = grad.add(before[name], alpha=group["weight_decay"])
        root = state["exp_avg_sq"].sqrt() / bias2**0.5
        denominator = root + group["eps"]
        scales[name] = _adam_scale(state["exp_avg"], grad, root, denominator, bias1, bias2, group, exact)
    return scales


def _sgd_factor(group: dict[str, Any], first_step: bool) -> float:
    """d(update direction)/d g of SGD: 1 on a parameter's first step or without momentum, else
    1 - dampening; times 1 + momentum with nesterov."""
    momentum, dampening = group["momentum"], group["dampening"]
    factor = 1.0 if (momentum == 0 or first_step) else 1.0 - dampening
    if group["nesterov"] and momentum:
        factor = factor * (1.0 + momentum)
    return factor


def step_scale(
    optimizer: torch.optim.Optimizer, parameters: dict[str, nn.Parameter], grads: Params | None = None, exact: bool = False
) -> Params:
    """d(theta')/d(g) per element (a tensor per parameter); see the module docstring.

    With `exact=True` (needs `grads`) Adam's derivative also includes the second moment's own
    dependence on g, in closed form: d/dg' [m_hat / (sqrt(v_hat) + eps)] =
    (1 - beta1) / (b1 D) - m_hat (1 - beta2) g' / (b2 D^2 sqrt(v_hat)), D = sqrt(v_hat) + eps."""
    kind = _check_supported(optimizer)
    groups = _groups_by_param(optimizer)
    scales: Params = {}
    if kind != "sgd" and grads is not None:
        with_grads = {name: param for name, param in parameters.items() if name in grads}
        scales = virtual_step_and_scale(optimizer, with_grads, grads, scale=True, exact=exact)[1]
    for name, param in parameters.items():
        group = groups.get(id(param))
        if group is None or name in scales:
            continue
        state = optimizer.state.get(param, {})
        lr = group["lr"]
        if kind == "sgd":
            scales[name] = torch.full_like(param, -lr * _sgd_factor(group, state.get("momentum_buffer") is None))
        else:  # no gradient given: the pre-step moment, bias-corrected for the steps it has seen
            beta1, beta2 = group["betas"]
            step = float(state["step"]) + 1 if "step" in state else 1.0
            exp_avg_sq = state.get("exp_avg_sq", torch.zeros_like(param))
            denominator = (exp_avg_sq / (1 - beta2 ** (step - 1)) if step > 1 else exp_avg_sq).sqrt() + group["eps"]
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
