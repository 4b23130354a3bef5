"""HydaLearn (Verboven, Chaudhary, Berrevoets, Verbeke, "HydaLearn: Highly Dynamic Task Weighting for
Multi-task Learning with Auxiliary Tasks", arXiv 2008.11643; Applied Intelligence 2023).

No usable official code exists (the public VerbekeLab/HydaLearn repository holds unrelated code), so
this is **rlmtl's reading** of the paper, not a port. What the
paper states: an auxiliary-task setting with designated main task(s); weights recomputed per
mini-batch from the main-task gain each task's gradient brings, with w_i / w_j = delta_i / delta_j.

The reading, per update step:

* g_i = grad_{theta_s} L_i [P] on task i's own batch (`context.task_grads` [K, P], shared params);
* a lookahead of the shared parameters with task i's gradient alone,
  `lookahead="sgd"` (default): theta_s - eta g_i, eta = `lr` or the optimizer's current lr;
  `lookahead="optimizer"`: the step the real optimizer would take with g_i alone
  (`lookahead.virtual_step` restricted to the shared parameters; note that its momentum / Adam
  first-moment part is common to every task and shifts all delta_i alike);
  task-specific parameters (heads) stay where they are;
* delta_i = L_main(theta) - L_main(lookahead_i) on the main task's batch (`context.batch`), L_main =
  sum of the primary tasks' losses; the main task's own delta is included.
  `variant="exact"` (default) evaluates theta and the K lookaheads with `context.losses_at`, in ONE
  call vmapped over the K + 1 parameter sets with `randomness="same"` (`vectorize=True`; same image
  augmentation for all, so delta measures the step and not the augmentation noise), or K + 1 calls
  replaying the same RNG state (`vectorize=False`). `variant="first_order"` uses
  delta_i ~ -g_main . (lookahead_i - theta_s) (= eta g_main . g_i for the SGD lookahead),
  g_main = sum of the primary rows of G: no extra forward.
* w_i proportional to max(delta_i, 0):
  `normalise="sum_to_k"` (default): w = K max(delta, 0) / sum max(delta, 0) (weights sum to K, as
  uniform's do); if no task helps (all delta <= 0), the primary tasks share K equally, the rest 0;
  `normalise="main_fixed"`: every primary task has weight 1 and an auxiliary task
  max(delta_i, 0) / mean_{j primary} delta_j (the ratio rule against the main task); if the main
  task's own delta is <= 0 the ratio is undefined and only the primary tasks are weighted.

Cost of the exact variant: `losses_at` evaluates every task's loss, so the K + 1 evaluations are
K + 1 forwards of the whole K-task batch (only the primary rows are used; the interface has no way
to evaluate a subset of tasks), and the vmapped call holds K + 1 copies of the shared parameters and
their activations (use `vectorize=False` or `update_every` when memory is short). Measured on CPU
(K = 10, 3x256 MLP, batch 32 per task): exact 7.3x uniform, first_order 2.1x (the per-task
gradients alone: 1.4x). With image augmentation inside the model (rlmtl's agent), the per-task
gradients come from one augmentation draw and the evaluations from another, so the exact delta
carries that noise; first_order takes g_main and g_i from the same draw.

The result is loss-level weights: the engine then applies w to the shared gradient (w @ G) and to the
heads (sum_i w_i grad L_i), so a task with weight 0 also leaves its head untouched that step.
Between updates (`update_every` > 1) the last weights, kept in a buffer, are reused. Everything stays
on the device (torch.where, no host branch on tensor values).
"""

from __future__ import annotations

import torch

from rlmtl.weighting.base import Params, Requirements, StepContext, Weighting, WeightingResult, register_weighting
from rlmtl.weighting.lookahead import losses_at_many, virtual_step

_VARIANTS = ("exact", "first_order")
_LOOKAHEADS = ("sgd", "optimizer")
_NORMALISE = ("sum_to_k", "main_fixed")


@register_weighting("hydalearn")
class HydaLearn(Weighting):
    """HydaLearn (rlmtl's reading): weights proportional to each task's one-step gain on the main task.

    Args:
        num_tasks: K.
        variant: "exact" (K + 1 forwards of the main batch, batched) or "first_order" (none).
        lookahead: "sgd" (theta_s - eta g_i) or "optimizer" (the real optimizer's step with g_i).
        normalise: "sum_to_k" or "main_fixed" (see the module docstring).
        lr: eta of the "sgd" lookahead; None = the optimizer's current learning rate.
        update_every: recompute the weights on steps with `context.step % update_every == 0`.
        vectorize: batch the K + 1 evaluations with torch.func.vmap (else a loop).
    """

    requirements = Requirements(primary_tasks=True, task_grads=True, functional_losses=True)
    reduces_own_statistics = True  # the lookahead losses are averaged over ranks

    def __init__(
        self,
        num_tasks: int,
        variant: str = "exact",
        lookahead: str = "sgd",
        normalise: str = "sum_to_k",
        lr: float | None = None,
        update_every: int = 1,
        vectorize: bool = True,
    ) -> None:
        super().__init__(num_tasks)
        for name, value, allowed in (
            ("variant", variant, _VARIANTS),
            ("lookahead", lookahead, _LOOKAHEADS),
            ("normalise", normalise, _NORMALISE),
        ):
            if value not in allowed:
                raise ValueError(f"hydalearn: {name} must be one of {allowed}, got {value!r}")
        if update_every < 1:
            raise ValueError(f"update_every must be >= 1, got {update_every}")
        if lr is not None and lr <= 0:
            raise ValueError(f"hydalearn: lr must be positive, got {lr}")
        self.variant, self.lookahead, self.normalise = variant, lookahead, normalise
        self.lr = lr
        self.update_every = int(update_every)
        self.vectorize = bool(vectorize)
        self.requirements = Requirements(
            primary_tasks=True,
            task_grads=True,
            functional_losses=variant == "exact",
            optimizer=lookahead == "optimizer",
        )
        self.register_buffer("weights", torch.ones(num_tasks))

    def combine(self, losses: torch.Tensor, context: StepContext) -> WeightingResult:
        """losses [K] (unused: L_main(theta) is re-evaluated with the lookaheads, same random draw) -> weights [K]
        from `context.task_grads` [K, P]."""
        if context.step % self.update_every == 0:
            with torch.no_grad():
                self.weights.copy_(self.weights_from_gains(self.gains(context), self._primary(context)))
        return WeightingResult(weights=self.weights.clone())

    def check(self) -> None:
        """Raise if the weights have become non-finite (called at log intervals, where a sync is fine)."""
        if not bool(torch.isfinite(self.weights).all()):
            raise FloatingPointError(f"hydalearn: non-finite task weights {self.weights.tolist()}")

    # ------------------------------------------------------------------ pieces (public for tests)
    def gains(self, context: StepContext) -> torch.Tensor:
        """delta [K]: the decrease of L_main on the main batch from each task's lookahead step."""
        grads = context.task_grads
        if grads is None:
            raise ValueError("hydalearn needs context.task_grads")
        primary = self._primary(context).to(grads.dtype)
        with torch.no_grad():
            shared = self._shared_names(context)
            steps = self._lookahead_steps(context, shared, grads)  # {name: [K, *shape]} = lookahead_i - theta_s
            if self.variant == "first_order":
                g_main = primary @ grads  # [P]
                flat = torch.cat([steps[name].reshape(grads.shape[0], -1) for name, _ in shared], dim=1)  # [K, P]
                return -(flat @ g_main)
            if context.losses_at is None or context.named_parameters is None or context.batch is None:
                raise ValueError("hydalearn (exact) needs losses_at, named_parameters and batch in the context")
            detached: Params = {name: param.detach() for name, param in context.named_parameters.items()}
            varying = {}
            for name, _ in shared:
                base = detached[name]
                varying[name] = torch.cat([base.unsqueeze(0), base.unsqueeze(0) + steps[name]])  # [K + 1, *shape]
            fixed = {name: value for name, value in detached.items() if name not in varying}
            losses = context.reduce_mean(losses_at_many(context.losses_at, varying, fixed, context.batch, self.vectorize))  # [K + 1, K]
            main = losses @ primary.to(losses.dtype)  # [K + 1]
            return main[0] - main[1:]

    def weights_from_gains(self, gains: torch.Tensor, primary: torch.Tensor) -> torch.Tensor:
        """delta [K], primary mask [K] (bool) -> weights [K] by `normalise` (see module docstring)."""
        k = gains.shape[0]
        positive = gains.clamp_min(0)
        main = primary.to(gains.dtype)
        count = main.sum()
        if self.normalise == "sum_to_k":
            total = positive.sum()
            helped = total > 0
            return torch.where(helped, k * positive / total.clamp_min(torch.finfo(gains.dtype).tiny), k * main / count)
        reference = (gains * main).sum() / count
        helped = reference > 0
        auxiliary = positive / reference.clamp_min(torch.finfo(gains.dtype).tiny)
        return torch.where(primary, torch.ones_like(gains), torch.where(helped, auxiliary, torch.zeros_like(gains)))

    # ------------------------------------------------------------------ helpers
    def _primary(self, context: StepContext) -> torch.Tensor:
        if context.primary_tasks is None:
            raise ValueError("hydalearn needs primary tasks (weighting.primary_tasks): the main task(s)")
        return context.primary_tasks

    @staticmethod
    def _shared_names(context: StepContext) -> list[tuple[str, torch.nn.Parameter]]:
        """(name, parameter) of each shared parameter, in `context.shared_parameters` order (= G's columns)."""
        named = context.named_parameters or {}
        by_id = {id(param): name for name, param in named.items()}
        missing = [i for i, param in enumerate(context.shared_parameters) if id(param) not in by_id]
        if missing and named:
            raise ValueError(f"hydalearn: shared parameters {missing} are not among named_parameters")
        return [(by_id.get(id(param), f"shared.{i}"), param) for i, param in enumerate(context.shared_parameters)]

    def _lookahead_steps(
        self, context: StepContext, shared: list[tuple[str, torch.nn.Parameter]], grads: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """{name: [K, *shape]}: lookahead_i - theta_s for each task i and shared parameter."""
        k = grads.shape[0]
        per_param: dict[str, torch.Tensor] = {}
        offset = 0
        for name, param in shared:
            size = param.numel()
            per_param[name] = grads[:, offset : offset + size].reshape(k, *param.shape)
            offset += size
        if self.lookahead == "sgd":
            eta = self.lr if self.lr is not None else context.lr
            return {name: -eta * grad for name, grad in per_param.items()}
        if context.optimizer is None:
            raise ValueError("hydalearn lookahead='optimizer' needs the optimizer in the context")
        parameters = {name: param for name, param in shared}
        rows = []
        for i in range(k):  # K cheap elementwise virtual steps (no forward)
            stepped = virtual_step(context.optimizer, parameters, {name: grad[i] for name, grad in per_param.items()})
            rows.append({name: stepped[name].detach() - param.detach() for name, param in shared})
        return {name: torch.stack([row[name] for row in rows]) for name, _ in shared}
