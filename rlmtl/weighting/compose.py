"""`Composite`: a loss weighting followed by a gradient method, e.g. `auto_lambda+cagrad`.

This is how Auto-Lambda's dense trainer (`trainer_dense.py --weight autol --grad_method cagrad`)
combines them: the first method's weights lambda [K] scale the task losses, each weighted loss
lambda_i L_i is back-propagated on its own, and the gradient method aggregates those weighted task
gradients lambda_i g_i of the shared parameters; the heads receive sum_i lambda_i grad L_i.

Here: r1 = first.combine(losses, ctx) gives lambda; the second method sees a context whose
`task_grads` rows are lambda_i g_i and the losses lambda_i L_i (lambda detached: the first method's
own update, e.g. Auto-Lambda's meta step, is already done). The result carries the second's
`shared_grad` (or its `loss`), and weights = lambda ⊙ w2, w2 the second's weights: for a pure
gradient aggregator (w2 = 1) that is lambda, for a weights-only second method it is the product
(the effective weight of each raw task loss), and the heads get exactly those weights, consistent
with what the engine does for either method alone. `make_weighting("a+b")` builds it; it is not
registered itself.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from rlmtl.weighting.base import StepContext, Weighting, WeightingResult


class Composite(Weighting):
    """`first` (a weighting: gives lambda [K]) then `second` (a gradient method or another weighting),
    both submodules, so `state_dict()` holds both states (keys `first.*`, `second.*`)."""

    def __init__(self, first: Weighting, second: Weighting) -> None:
        if first.num_tasks != second.num_tasks:
            raise ValueError(f"cannot compose methods for {first.num_tasks} and {second.num_tasks} tasks")
        for part in (first, second):
            if part.uses_real_step:
                raise ValueError(
                    f"{type(part).__name__} takes the real optimizer step as its lookahead, which a composition replaces: "
                    "use its virtual lookahead (e.g. auto_lambda's lookahead='virtual') here"
                )
        super().__init__(first.num_tasks)
        self.first = first
        self.second = second
        # merge() already keeps task_grads when the second method needs it
        self.requirements = first.requirements.merge(second.requirements)
        self.needs_finite_task_grads = first.needs_finite_task_grads or second.needs_finite_task_grads
        self._scale: torch.Tensor | None = None
        self._inner_context: StepContext | None = None

    def combine(self, losses: torch.Tensor, context: StepContext) -> WeightingResult:
        """losses [K] -> WeightingResult(weights = lambda ⊙ w2 [K], shared_grad [P] or loss from the second)."""
        first = self.first.combine(losses, context)
        scale = first.weights.detach()  # lambda [K]
        inner = replace(
            context, task_grads=None if context.task_grads is None else scale.unsqueeze(1).to(context.task_grads.dtype) * context.task_grads
        )
        second = self.second.combine(scale.to(losses.dtype) * losses, inner)
        self._scale, self._inner_context = scale, inner
        return WeightingResult(weights=scale * second.weights.detach().to(scale.dtype), loss=second.loss, shared_grad=second.shared_grad)

    def after_step(self, losses_after: torch.Tensor | None, context: StepContext) -> None:
        """Forwards to both; the second method gets the losses scaled by the lambda it saw in combine."""
        self.first.after_step(losses_after, context)
        scaled = losses_after if losses_after is None or self._scale is None else self._scale.to(losses_after.dtype) * losses_after
        self.second.after_step(scaled, self._inner_context if self._inner_context is not None else context)

    def uses_val_batch(self, step: int) -> bool:
        """Either part reads the second batch at `step`."""
        return self.first.uses_val_batch(step) or self.second.uses_val_batch(step)

    def data_parallel_problem(self) -> str | None:
        """The first part's problem under data parallelism, else the second's."""
        return self.first.data_parallel_problem() or self.second.data_parallel_problem()

    def check(self) -> None:
        """Forwards to both parts."""
        for part in (self.first, self.second):
            check = getattr(part, "check", None)
            if check is not None:
                check()
