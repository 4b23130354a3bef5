"""Auto-Lambda (Liu, James, Davison, Johns, "Auto-Lambda: Disentangling Dynamic Task Relationships",
TMLR 2022, arXiv 2202.03091): task weights lambda [K] learned by one-step meta-learning.

Per update step (official `auto_lambda.py::unrolled_backward`, followed by the meta optimizer step):

1. g = grad_theta sum_i lambda_i L_i(theta; train batch), over every model parameter;
2. theta' = the step the model optimizer would take with g (a *virtual* step);
3. d = grad_theta' sum_{i primary} L_i(theta'; val batch);
4. the meta-gradient dL_val(theta'(lambda))/dlambda_i = d . (dtheta'/dg) . grad_theta L_i, estimated
   by a central finite difference of L_i(theta; train) along v = (dtheta'/dg) d;
5. one Adam step on lambda; the real step then uses sum_i lambda_i L_i with the updated lambda.

Differences from the official code, all deliberate:

* The virtual step mirrors the optimizer the run really uses (`lookahead.virtual_step`: SGD with
  momentum / dampening / nesterov / weight decay, Adam, AdamW; every parameter group), where the
  official code only knows SGD and reads `param_groups[0]` (official auto-lambda `auto_lambda.py`, `virtual_step`).
  For SGD (dampening 0) it is the official formula theta - alpha (momentum * buffer + g + wd theta).
* The finite-difference direction is v = J^T d, J = dtheta'/dg (elementwise: every supported
  optimizer's step is a per-coordinate function of g, so J is diagonal), with radius
  eps = `fd_radius` / ||v|| and lambda.grad_i = (L_i(theta + eps v) - L_i(theta - eps v)) / (2 eps).
  For SGD, J = -alpha (x (1 + momentum) with nesterov), so this equals the official `-alpha * h`
  exactly (the two evaluation points coincide with the official theta-/theta+; the step in
  parameter space has norm `fd_radius` = 0.01 in both).
  Under Adam/AdamW J depends on how the second moment is treated (`jacobian`):
  "exact" (default): the full elementwise derivative of the Adam/AdamW step, second moment's own
  dependence on g included, in closed form (`lookahead.step_scale(..., exact=True)`): no extra
  autograd pass. The finite difference then estimates the exact dL_val/dlambda under Adam too.
  "held": the second moment is held fixed at its value after this step's update; it ignores only
  v's own (1 - beta2) g^2 dependence. Close to "exact" once Adam has some history, far from it on
  the very first step (Adam's first step is ~ -lr sign(g), whose true derivative is ~0).
  For SGD both options are the same J.
* No deep copy of the model and no in-place finite difference: every evaluation goes through
  `context.losses_at` at explicit parameter tensors, so the live model is never touched (the
  official in-place theta += eps d; theta -= 2 eps d; theta += eps d is not bit-exact, §3.9).
  Unused parameters are allowed (§3.10): a parameter without a gradient does not move, exactly as
  in the real optimizer step.
* The two finite-difference evaluations run as ONE call vmapped over the two parameter sets with
  `randomness="same"` (`vectorize=True`, default), so random operations inside the model's forward
  (rlmtl's image augmentation, dropout) draw the same numbers at theta + eps v and theta - eps v;
  with two independent draws the difference would be dominated by augmentation noise. With
  `vectorize=False` (for models vmap cannot run, e.g. BatchNorm in training mode) the two calls
  replay the same RNG state instead.
* If the engine hands over losses without a graph (a composite such as `auto_lambda+cagrad` on the
  batched per-task-gradient route), the training losses are re-evaluated with `losses_at` on
  `context.batch` to take g.

`lookahead="real"` (an option; default "virtual" as above): the real step IS the lookahead. On a
meta-update step the real optimizer step is taken with the current lambda, which is exactly
theta' of point 2 (the virtual step mirrors it), then d (point 3) is taken at the new parameters
and the finite difference (point 4) at the saved old ones, with v = (dtheta'/dg) d read from the
optimizer's updated state and the gradient it applied (after the trainer's clipping;
`lookahead.applied_step_scale`). Same meta-gradient, two differences: the updated lambda weights the losses
from the NEXT step on (official: already in this step's real update, so lambda lags one step),
and theta' includes gradient clipping (the virtual step ignores it, as the official code; the clip
factor's own dependence on lambda is ignored). It saves the backward pass for g and the virtual
step, about a fifth of a meta-update's cost on rlmtl's MT10 agent: with `update_every=4` it is the
configuration that meets rlmtl's 1.5x-of-uniform cost bar (README). It needs the real gradient to be the lambda-weighted
one, so it cannot be composed with a gradient method (`uses_real_step`).

lambda is raw and unconstrained (no softmax, no clamp), initialised to `weight_init` = 0.1, as in the
official code. The meta optimizer is Adam (betas 0.9/0.999, eps 1e-8, no weight decay, as the official
`optim.Adam([meta_weights], lr)`), kept in buffers (`BufferAdam`) so it is saved with the checkpoint.

`meta_lr` default 1e-4: the official dense-prediction trainer default (NYUv2; 3e-4 on CIFAR-100,
3e-5 on CityScapes). Adam's step is about `meta_lr` per update whatever the meta-gradient's scale,
so BC's small losses (1e-3..1e-1) do not call for a larger rate; what matters is the drift budget
meta_lr x updates: NYUv2 runs ~40k steps (budget ~4), rlmtl's default 20k steps gives ~2, i.e. lambda
can move by up to 20x its initial value, which is ample. Raise it for short runs.

Auxiliary mode: with `primary_tasks` (a bool mask [K]) only those tasks enter the validation loss;
lambda is still learned for every task. Without it (None) every task is primary (multi-task mode).

Cost per update step (beyond the real step): 1 backward through the training losses' graph (not
with lookahead="real"), one forward + backward on the validation batch at theta', and 2 forwards
(one vmapped call) for the finite difference; `update_every` > 1 amortises it. Measured on CPU (K = 10, 3x256 MLP agent,
batch 32 per task, AdamW): see scripts/bench_weighting.py and the README (the official code:
3.8x); on such a small model Python overhead dominates.

Not mirrored (as in the official code): gradient clipping applied by the trainer after the engine
(train.grad_clip) changes the real step but not the virtual one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from rlmtl.weighting.adam import BufferAdam
from rlmtl.weighting.base import Params, Requirements, StepContext, Weighting, WeightingResult, mean_over_ranks, register_weighting
from rlmtl.weighting.lookahead import applied_step_scale, losses_at_many, virtual_step_and_scale, without_history


@register_weighting("auto_lambda")
class AutoLambda(Weighting):
    """Auto-Lambda: raw task weights lambda [K] meta-learned from a one-step lookahead.

    Args:
        num_tasks: K.
        weight_init: initial lambda_i (official default 0.1).
        meta_lr: Adam learning rate on lambda (default 1e-4, see the module docstring).
        update_every: meta-update on steps with `context.step % update_every == 0`; other steps
            reuse lambda unchanged (cost 0 extra passes).
        fd_radius: norm of the finite-difference step in parameter space (official 0.01).
        vectorize: evaluate the two finite-difference points in one vmapped call.
        jacobian: "exact" (Adam's full elementwise step derivative) or "held" (its second moment
            held fixed); identical for SGD, see the module docstring.
        lookahead: "virtual" (official: a virtual step, then the real step with the updated
            lambda) or "real" (the real step is the lookahead; lambda applies from the next step).
    """

    requirements = Requirements(val_batch=True, optimizer=True, functional_losses=True)
    reduces_own_statistics = True  # g, d and the finite difference are averaged over ranks

    def __init__(
        self,
        num_tasks: int,
        weight_init: float = 0.1,
        meta_lr: float = 1e-4,
        update_every: int = 1,
        fd_radius: float = 0.01,
        vectorize: bool = True,
        jacobian: str = "exact",
        lookahead: str = "virtual",
    ) -> None:
        super().__init__(num_tasks)
        if update_every < 1:
            raise ValueError(f"update_every must be >= 1, got {update_every}")
        if meta_lr <= 0 or fd_radius <= 0:
            raise ValueError(f"meta_lr and fd_radius must be positive, got {meta_lr}, {fd_radius}")
        if jacobian not in ("held", "exact"):
            raise ValueError(f"jacobian must be 'held' or 'exact', got {jacobian!r}")
        if lookahead not in ("virtual", "real"):
            raise ValueError(f"lookahead must be 'virtual' or 'real', got {lookahead!r}")
        self.jacobian = jacobian
        self.lookahead = lookahead
        self.uses_real_step = lookahead == "real"
        self._pending: _RealLookahead | None = None  # lookahead="real": between combine and after_step
        self.update_every = int(update_every)
        self.fd_radius = float(fd_radius)
        self.vectorize = bool(vectorize)
        self.register_buffer("lambdas", torch.full((num_tasks,), float(weight_init)))
        self.meta_optimizer = BufferAdam((num_tasks,), lr=meta_lr)

    def combine(self, losses: torch.Tensor, context: StepContext) -> WeightingResult:
        """losses [K] (with their graph, or detached on the per-task-gradient route) -> lambda [K]."""
        if context.step % self.update_every == 0:
            if self.lookahead == "real":
                self._begin_real_lookahead(context)
            else:
                grad = self.meta_gradient(losses, context)
                self.meta_optimizer.step(self.lambdas, grad.detach().to(self.lambdas.dtype))
        return WeightingResult(weights=self.lambdas.clone())

    def after_step(self, losses_after: torch.Tensor | None, context: StepContext) -> None:
        """lookahead="real": the meta-update, now that the real step (theta') has been taken."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        named = pending.named
        grads = {name: named[name].grad.detach() for name in pending.start if named[name].grad is not None}
        if not grads:
            raise RuntimeError("auto_lambda (lookahead='real'): no gradients after the step; call after_step() before zero_grad()")
        scales = applied_step_scale(
            pending.optimizer, named, grads, pending.start, exact=self.jacobian == "exact", first_steps=pending.first_steps
        )
        stepped = {name: named[name].detach().requires_grad_() for name in scales}
        start = {**{name: param.detach() for name, param in named.items()}, **pending.start}
        grad = self._meta_gradient_from(context, start, stepped, scales)
        self.meta_optimizer.step(self.lambdas, grad.detach().to(self.lambdas.dtype))

    def _begin_real_lookahead(self, context: StepContext) -> None:
        """Save theta (and which parameters have no optimizer history) before the real step."""
        optimizer, named, _ = _checked(context)
        trainable = {name: param for name, param in named.items() if param.requires_grad}
        start = {name: param.detach().clone() for name, param in trainable.items()}
        self._pending = _RealLookahead(named=named, start=start, optimizer=optimizer, first_steps=without_history(optimizer, trainable))

    def uses_val_batch(self, step: int) -> bool:
        """The validation batch is read on meta-update steps only."""
        return step % self.update_every == 0

    def meta_gradient(self, losses: torch.Tensor, context: StepContext) -> torch.Tensor:
        """d L_val(theta'(lambda)) / d lambda [K] at the current lambda (what Adam then steps on).

        Reads context.optimizer, named_parameters, losses_at, batch (the training batch, for the
        finite difference), val_batch and primary_tasks. Leaves the model and optimizer untouched."""
        optimizer, named, losses_at = _checked(context)
        names = [name for name, param in named.items() if param.requires_grad]
        detached: Params = {name: param.detach() for name, param in named.items()}

        # 1. g = grad_theta sum_i lambda_i L_i(theta; train)
        train_losses = losses if losses.requires_grad else losses_at(dict(named), context.batch)
        lambdas = self.lambdas.to(train_losses.dtype)
        grads = torch.autograd.grad((lambdas * train_losses).sum(), [named[n] for n in names], retain_graph=True, allow_unused=True)
        grads = mean_over_ranks(context, list(grads))
        moved = {name: grad for name, grad in zip(names, grads) if grad is not None}
        if not moved:
            return torch.zeros_like(self.lambdas)

        # 2. theta' = the real optimizer's step with g (functional: nothing is written)
        inputs = {name: grad.detach() for name, grad in moved.items()}
        with torch.no_grad():  # theta' and d theta'/d g (used in 4.) share the moment updates
            stepped, scales = virtual_step_and_scale(optimizer, named, inputs, exact=self.jacobian == "exact")
        leaves = {name: stepped[name].detach().requires_grad_() for name in moved}
        return self._meta_gradient_from(context, detached, leaves, scales)

    def _meta_gradient_from(self, context: StepContext, start: Params, leaves: Params, scales: Params) -> torch.Tensor:
        """Points 3 and 4: from theta (`start`, every parameter), theta' (`leaves`, the moved
        parameters, requiring grad) and dtheta'/dg (`scales`) to the meta-gradient [K]."""
        losses_at, detached = context.losses_at, start
        # 3. d = grad_theta' sum_{i primary} L_i(theta'; val)
        val_losses = losses_at({**detached, **leaves}, context.val_batch)
        primary = torch.ones_like(val_losses) if context.primary_tasks is None else context.primary_tasks.to(val_losses.dtype)
        d = torch.autograd.grad((primary * val_losses).sum(), list(leaves.values()), allow_unused=True)
        d = mean_over_ranks(context, list(d))

        # 4. finite difference of L_i(theta; train) along v = (dtheta'/dg) d
        direction = {name: scales[name] * grad for name, grad in zip(leaves, d) if grad is not None and name in scales}
        if not direction:
            return torch.zeros_like(self.lambdas)
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(v) for v in direction.values()]))
        eps = self.fd_radius / norm.clamp_min(torch.finfo(norm.dtype).tiny)
        with torch.no_grad():
            signs = torch.stack([eps, -eps])  # theta + eps v and theta - eps v, each in one operation per parameter
            varying = {name: torch.addcmul(detached[name], signs.view(2, *[1] * v.dim()), v) for name, v in direction.items()}
            fixed = {name: value for name, value in detached.items() if name not in varying}
            shifted = context.reduce_mean(losses_at_many(losses_at, varying, fixed, context.batch, self.vectorize))  # [2, K]
            return (shifted[0] - shifted[1]) / (2 * eps)

    def check(self) -> None:
        """Raise if lambda has become non-finite (called at log intervals, where a sync is fine)."""
        if not bool(torch.isfinite(self.lambdas).all()):
            raise FloatingPointError(f"auto_lambda: non-finite task weights {self.lambdas.tolist()}")


def _checked(context: StepContext) -> tuple[torch.optim.Optimizer, dict[str, torch.nn.Parameter], Any]:
    """(optimizer, named parameters, losses_at) of a meta-update's context; ValueError naming what is missing."""
    optimizer, named, losses_at = context.optimizer, context.named_parameters, context.losses_at
    if optimizer is None or named is None or losses_at is None or context.val_batch is None:
        raise ValueError("auto_lambda needs optimizer, named_parameters, losses_at and val_batch in the context")
    if context.batch is None:
        raise ValueError("auto_lambda evaluates the training losses at shifted parameters: pass batch= to backward()")
    return optimizer, named, losses_at


@dataclass
class _RealLookahead:
    """A meta-update in progress with lookahead="real", from combine to after_step."""

    named: dict[str, torch.nn.Parameter]
    start: Params  # theta before the real step (detached copies of the trainable parameters)
    optimizer: torch.optim.Optimizer
    first_steps: set[str]  # parameters without optimizer state before the step (`without_history`)
