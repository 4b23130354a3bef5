"""`MultiTaskBackward`: one weighting step on any multi-task model, in rlmtl's trainer or your own loop.

    balance = MultiTaskBackward(make_weighting("famo", K), shared_parameters=model.trunk.parameters())
    for batch in loader:
        optimizer.zero_grad()
        losses = per_task_losses(model, batch)        # [K], one scalar per task
        balance.backward(losses)                      # sets .grad of every parameter
        optimizer.step()
        with torch.no_grad():
            balance.after_step(per_task_losses(model, batch))   # only FAMO needs it; harmless otherwise

It provides exactly what the method's `requirements` ask for. Per-task gradients of the shared
parameters come from `per_task_gradients` when the model offers a batched implementation (rlmtl's
agent: one vmapped backward), otherwise from K `autograd.grad` calls on the per-task losses.

With an agent (`MultiTaskBackward.for_agent`, what rlmtl's trainer uses) the engine is configured
in one call and runs the whole weighting side of a step itself: it computes the losses of the batch,
samples nothing but says whether the method reads a second batch this step (`needs_val_batch`),
steps the optimizer (skipping a non-finite step on the device: `optimizer_step`), computes the
post-step losses a method asks for, and counts the steps (`steps`, the run's one step counter).

Data parallelism (`reducer=`, e.g. `rlmtl.distributed.Ranks` under torchrun): the method sees the
losses averaged over ranks (with this rank's graph) and the task gradients [K, P] averaged in one
flat all-reduce (with the heads' gradients), so every rank computes the same weights and state;
loss-level methods' gradients are averaged after `backward` in one flat all-reduce; post-step
losses are averaged too. Methods that evaluate losses themselves average them with
`context.reduce_mean`; one that does not refuses to start (`Weighting.data_parallel_problem`).

Diagnostics (`backward(observe_task_grads=fn)`, the trainer's gradient-conflict measurement): `fn`
gets the step's task gradients [K, P], raw (unweighted, unclipped) and averaged over ranks; the
rows a gradient method reads, or, for any other method, rows computed at that step only, without
touching `.grad` or drawing from the random streams.

Non-finite steps (`skip_nonfinite=True`): `found_inf` (0-dim float32 on the device) is 1.0 when a
loss, task gradient or final gradient is NaN/inf; the method then sees stand-in finite values (ones,
rows of the identity) so solvers neither fail nor store NaN, and `after_step` puts the method's
state back as it was. Nothing here syncs with the host; the caller passes `found_inf` to a fused
optimizer (`optimizer.found_inf`, as GradScaler does) to skip the update.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Iterable, Protocol, Sequence, Union

import torch
from torch import nn

from rlmtl.agents.base import MultiTaskAgent
from rlmtl.weighting.base import Params, StepContext, Weighting, WeightingResult

# (batch) -> (losses [K] detached, shared grads [K, P], task-specific grads: one [K, *shape] per
# task-specific parameter, slice k = task k's gradient of its own block)
PerTaskGradients = Callable[[Any], tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]]


class Reducer(Protocol):
    """Averages per-rank tensors over data-parallel ranks (`rlmtl.distributed.Ranks` is one)."""

    def mean(self, tensor: torch.Tensor) -> torch.Tensor: ...

    def mean_in_place(self, tensors: Sequence[torch.Tensor]) -> None: ...


class MultiTaskBackward:
    """Drives one `Weighting` for one model.

    Args:
        weighting: the method.
        shared_parameters: parameters every task's loss depends on (the encoder / trunk).
        task_parameters: the rest (heads); default: none (their gradients then come only from
            `loss.backward()` in the loss-level path).
        optimizer: the model's optimizer (methods with `requirements.optimizer` mirror it).
        named_parameters: every model parameter by name (for `functional_losses` methods).
        losses_at: (params by name, batch) -> [K] losses (a tensor or a sequence of K scalars) at
            those parameters, without touching the model (e.g. `lambda p, b: torch.func.functional_call(model, p, (b,))`).
        primary_tasks: indices of the primary tasks (auxiliary-learning mode).
        per_task_gradients: a batched per-task gradient function (see `PerTaskGradients`).
        reducer: averages over data-parallel ranks (`rlmtl.distributed.Ranks`); None = one process.
        skip_nonfinite: detect non-finite losses / gradients on the device (`found_inf`, for the
            optimizer to skip the step) and keep the method's state unchanged on such steps.
        task_losses: (batch) -> [K] losses with their graph; then `backward(batch=...)` and
            `after_step()` compute the losses (and the post-step losses) themselves.
        grad_clip: clip the final gradients to this global norm at the end of `backward` (what
            `torch.nn.utils.clip_grad_norm_` after it would do, sharing the one norm the
            non-finite check takes); 0 = off.
    """

    def __init__(
        self,
        weighting: Weighting,
        shared_parameters: Iterable[nn.Parameter],
        task_parameters: Iterable[nn.Parameter] = (),
        *,
        optimizer: torch.optim.Optimizer | None = None,
        named_parameters: dict[str, nn.Parameter] | None = None,
        losses_at: Callable[[Params, Any], Losses] | None = None,
        primary_tasks: Sequence[int] | None = None,
        per_task_gradients: PerTaskGradients | None = None,
        reducer: Reducer | None = None,
        skip_nonfinite: bool = False,
        task_losses: Callable[[Any], torch.Tensor] | None = None,
        grad_clip: float = 0.0,
    ) -> None:
        if not math.isfinite(grad_clip) or grad_clip < 0:
            raise ValueError(f"grad_clip must be a finite number >= 0 (0 = off), got {grad_clip}")
        self.grad_clip = float(grad_clip)
        self.weighting = weighting
        self.task_losses = task_losses
        self.shared_parameters = list(shared_parameters)
        self.task_parameters = list(task_parameters)
        self.optimizer = optimizer
        self.named_parameters = named_parameters
        self.losses_at = _stacking(losses_at) if losses_at is not None else None
        self.per_task_gradients = per_task_gradients
        self.steps = 0
        needs = weighting.requirements
        name = type(weighting).__name__
        if needs.optimizer and optimizer is None:
            raise ValueError(f"{name} mirrors the model optimizer: pass optimizer=")
        if needs.functional_losses and (losses_at is None or named_parameters is None):
            raise ValueError(f"{name} evaluates losses at lookahead parameters: pass losses_at= and named_parameters=")
        if needs.primary_tasks and not primary_tasks:
            raise ValueError(f"{name} needs primary tasks (weighting.primary_tasks)")
        device = self.shared_parameters[0].device if self.shared_parameters else torch.device("cpu")
        self.primary_mask: torch.Tensor | None = None
        if primary_tasks:
            bad = [t for t in primary_tasks if not 0 <= t < weighting.num_tasks]
            if bad:
                raise ValueError(f"primary task indices {bad} out of range for {weighting.num_tasks} tasks")
            self.primary_mask = torch.zeros(weighting.num_tasks, dtype=torch.bool, device=device)
            self.primary_mask[list(primary_tasks)] = True
        self._context: StepContext | None = None
        self.skip_nonfinite = skip_nonfinite
        self.found_inf: torch.Tensor | None = None  # 0-dim float32: 1.0 if this step's losses or gradients are non-finite
        self.nonfinite_tasks: torch.Tensor | None = None  # [K] bool: tasks whose (mean) loss is non-finite this step
        self._saved_state: dict[str, torch.Tensor] = {}
        self._identity: torch.Tensor | None = None
        self.reducer: Reducer | None = None
        self.set_reducer(reducer)

    @classmethod
    def for_agent(
        cls,
        agent: MultiTaskAgent,
        weighting: Weighting,
        optimizer: torch.optim.Optimizer,
        *,
        primary_tasks: Sequence[int] | None = None,
        reducer: Reducer | None = None,
        skip_nonfinite: bool = False,
        grad_clip: float = 0.0,
    ) -> "MultiTaskBackward":
        """The engine for an agent (agents/base.py `MultiTaskAgent`): its batched per-task gradients
        (one vmapped backward), its losses at other parameters for lookahead methods, its losses
        per batch. With `skip_nonfinite` the optimizer must be a fused one, whose step reads
        `found_inf` (see `optimizer_step`)."""
        if skip_nonfinite and not optimizer.defaults.get("fused"):
            raise ValueError("skip_nonfinite needs a fused optimizer (fused=True), whose step reads found_inf")
        return cls(
            weighting,
            agent.shared_parameters(),
            agent.task_specific_parameters(),
            optimizer=optimizer,
            named_parameters=dict(agent.named_parameters()),
            losses_at=lambda params, batch: torch.func.functional_call(agent, params, (batch,)),
            primary_tasks=primary_tasks or [],
            per_task_gradients=agent.gradient_rows,
            reducer=reducer,
            skip_nonfinite=skip_nonfinite,
            task_losses=agent.task_losses,
            grad_clip=grad_clip,
        )

    def needs_val_batch(self) -> bool:
        """Whether the method reads a second batch at this step (sample it only then)."""
        return self.weighting.uses_val_batch(self.steps)

    @property
    def skipped(self) -> torch.Tensor | None:
        """0-dim bool on the device: this step was non-finite and is skipped (None without `skip_nonfinite`)."""
        return None if self.found_inf is None else self.found_inf > 0

    def optimizer_step(self) -> None:
        """`optimizer.step()`; on a non-finite step the fused optimizer skips the update on the
        device (it reads `found_inf`, as under a GradScaler): no host sync, no step count."""
        if self.optimizer is None:
            raise ValueError("optimizer_step() needs the optimizer: pass optimizer=")
        if self.found_inf is None:
            self.optimizer.step()
            return
        self.optimizer.found_inf = self.found_inf
        try:
            self.optimizer.step()
        finally:
            del self.optimizer.found_inf

    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"]) if self.optimizer is not None else 0.0

    def set_reducer(self, reducer: Reducer | None) -> None:
        """Average over data-parallel ranks with `reducer` (e.g. `rlmtl.distributed.Ranks`): the
        losses and task gradients a method reads, the post-step losses and the final gradients.
        Refuses (ValueError) a method that computes statistics of its own it does not average."""
        if reducer is not None and getattr(reducer, "distributed", True):
            problem = self.weighting.data_parallel_problem()
            if problem:
                raise ValueError(f"{problem}; it cannot run on several ranks (run it on one process)")
        self.reducer = reducer if reducer is not None and getattr(reducer, "distributed", True) else None

    def _mean(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor if self.reducer is None else self.reducer.mean(tensor)

    def _mean_in_place(self, tensors: list[torch.Tensor]) -> None:
        if self.reducer is not None:
            self.reducer.mean_in_place(tensors)

    def backward(
        self,
        losses: Losses | None = None,
        *,
        batch: Any = None,
        val_batch: Any = None,
        observe_task_grads: Callable[[torch.Tensor], None] | None = None,
    ) -> tuple[torch.Tensor, WeightingResult]:
        """Combine the per-task losses and set `.grad` on the model's parameters.

        `losses`: the K task losses with their graphs, as a sequence of K scalars or a stacked [K]
        tensor; required unless the engine has `task_losses` or a batched `per_task_gradients` for a
        task-gradient method (then `batch` is). Prefer the sequence for task-gradient methods: task
        k's gradient is then taken through task k's graph only, while from a stacked tensor every
        task's gradient is taken through all K graphs (the other tasks' parts carry zeros), K times
        the work when the tasks' graphs are separate (e.g. one batch per task). Returns (losses [K]
        detached, averaged over ranks under data parallelism; result).

        `observe_task_grads`: called once with this step's task gradients [K, P] of the shared
        parameters (detached, averaged over ranks) before the method sees them, for diagnostics
        (rlmtl/training/gradient_conflict.py). A method that reads task gradients hands over its
        own rows; for any other method they are computed here (`_observed_task_grads`) and
        averaged in the same all-reduce as the losses. Passing it changes neither the step nor
        the random streams.
        """
        separate = None if losses is None or isinstance(losses, torch.Tensor) else list(losses)
        if separate is not None:
            losses = torch.stack(separate)
        needs = self.weighting.requirements
        if val_batch is None and self.weighting.uses_val_batch(self.steps):
            raise ValueError(f"{type(self.weighting).__name__} needs a second batch per task: pass val_batch=")
        task_grads = head_grads = observed = None
        if needs.task_grads:
            if self.per_task_gradients is not None:
                losses, task_grads, head_grads = self.per_task_gradients(batch)
            else:
                if losses is None:
                    raise ValueError("pass the per-task losses [K]")
                if separate is None:
                    _warn_stacked(losses)
                task_grads = self._autograd_task_grads(separate if separate is not None else losses)
        else:
            if observe_task_grads is not None:
                observed = self._observed_task_grads(batch)  # before the losses: the same random shifts as theirs
            if losses is None:
                if self.task_losses is None or batch is None:
                    raise ValueError("pass the per-task losses [K]")
                losses = self.task_losses(batch)
            if observe_task_grads is not None and observed is None:
                observed = self._autograd_task_grads(separate if separate is not None else losses).detach()
        # the method sees the mean over ranks (value) with this rank's graph: x - x.detach() is exactly 0
        mean_losses = losses.detach().clone() if self.reducer is not None else losses.detach()
        rows = task_grads if task_grads is not None else observed
        self._mean_in_place([mean_losses, *([rows] if rows is not None else []), *(head_grads or [])])
        if observe_task_grads is not None and rows is not None:
            observe_task_grads(rows.detach())
        method_losses = losses
        if self.reducer is not None:
            method_losses = mean_losses + (losses - losses.detach()) if losses.requires_grad else mean_losses
        bad = None
        if self.skip_nonfinite:
            self._save_state()
            self.nonfinite_tasks = _nonfinite(mean_losses)
            bad = self.nonfinite_tasks.any()
            if task_grads is not None:
                # one reduction instead of an elementwise mask: any NaN/inf makes the sum non-finite
                # (so would a sum overflowing float32, i.e. gradients near 1e38: skipping those is fine)
                bad = bad | _nonfinite(task_grads.sum())
                if self.weighting.needs_finite_task_grads:  # solvers: a [K, P] copy per step, only for them
                    task_grads = torch.where(bad, self._stand_in(task_grads), task_grads)
            method_losses = torch.where(bad, 1.0, method_losses)
        context = StepContext(
            step=self.steps,
            lr=self._lr(),
            shared_parameters=self.shared_parameters,
            primary_tasks=self.primary_mask,
            task_grads=task_grads,
            batch=batch,
            val_batch=val_batch,
            optimizer=self.optimizer if needs.optimizer else None,
            named_parameters=self.named_parameters if needs.functional_losses else None,
            losses_at=self.losses_at if needs.functional_losses else None,
            reduce_mean=self._mean if self.reducer is not None else StepContext.reduce_mean,
        )
        self._context = context
        result = self.weighting.combine(method_losses, context)
        if task_grads is None:
            loss = result.loss if result.loss is not None else (result.weights.detach() * method_losses).sum()
            loss.backward()
            self._mean_in_place([p.grad for p in (*self.shared_parameters, *self.task_parameters) if p.grad is not None])
        else:
            self._write_grads(result, task_grads, head_grads, losses)
            if head_grads is None:  # heads took this rank's autograd gradients
                self._mean_in_place([p.grad for p in self.task_parameters if p.grad is not None])
        if bad is not None or self.grad_clip > 0:
            self._check_and_clip(bad, mean_losses.device)
        return mean_losses, result

    def _check_and_clip(self, bad: torch.Tensor | None, device: torch.device) -> None:
        """One global norm of the final gradients: clip to `grad_clip` with it, and (with
        `skip_nonfinite`) set `found_inf` when it, or `bad`, says the step is non-finite."""
        params = [p for p in (*self.shared_parameters, *self.task_parameters) if p.grad is not None]
        if not params:
            total = torch.zeros((), device=device)
        else:
            total = torch.nn.utils.get_total_norm([p.grad for p in params])
            if self.grad_clip > 0:
                torch.nn.utils.clip_grads_with_norm_(params, self.grad_clip, total)
        if bad is not None:
            self.found_inf = (bad | _nonfinite(total)).to(torch.float32)

    def after_step(self, losses_after: Losses | None = None) -> None:
        """Call after optimizer.step(); `losses_after` [K] (same batches, updated model) if the method
        asks (with `task_losses` the engine computes them on this step's batch).

        With `skip_nonfinite`, a step whose losses or gradients were non-finite (`found_inf`), or
        whose `losses_after` are, leaves the method's state as it was before `backward`."""
        if self.weighting.requirements.post_step_losses and losses_after is None and self.task_losses is not None and self._context:
            with torch.no_grad():
                losses_after = self.task_losses(self._context.batch)
        if self.weighting.requirements.post_step_losses and losses_after is None:
            raise ValueError(f"{type(self.weighting).__name__} needs the losses after the step: pass losses_after=")
        if self._context is None:
            raise RuntimeError("after_step() called before backward()")
        if losses_after is not None:
            losses_after = self._mean(as_loss_vector(losses_after).detach())
        if self.skip_nonfinite and self.found_inf is not None:
            bad = self.found_inf > 0
            if losses_after is not None:
                bad = bad | _nonfinite(losses_after).any()
                losses_after = torch.where(bad, torch.ones_like(losses_after), losses_after)
            self.weighting.after_step(losses_after, self._context)
            self._restore_state(bad)
        else:
            self.weighting.after_step(losses_after, self._context)
        self.steps += 1

    # ------------------------------------------------------------------ non-finite steps
    def _stand_in(self, task_grads: torch.Tensor) -> torch.Tensor:
        """A well-conditioned [K, P] (rows of the identity) the method sees instead of non-finite
        task gradients, so solvers (Nash-MTL, CAGrad) neither fail nor store NaN; discarded after."""
        if self._identity is None or self._identity.shape != task_grads.shape or self._identity.dtype != task_grads.dtype:
            self._identity = torch.eye(*task_grads.shape, dtype=task_grads.dtype, device=task_grads.device)
        return self._identity

    @torch.no_grad()
    def _save_state(self) -> None:
        """Copy the method's state into buffers kept from step to step (allocated again only when
        a tensor's shape, dtype or device changes), for `_restore_state`."""
        for name, value in self.weighting.state_dict(keep_vars=True).items():
            saved = self._saved_state.get(name)
            if saved is None or saved.shape != value.shape or saved.dtype != value.dtype or saved.device != value.device:
                self._saved_state[name] = value.detach().clone()
            else:
                saved.copy_(value)

    @torch.no_grad()
    def _restore_state(self, bad: torch.Tensor) -> None:
        """Where `bad` (a 0-dim bool on the device; no host sync) put back the state saved in backward,
        in place. A tensor whose shape changed in the step (DB-MTL's first gradient buffer) is zeroed instead."""
        for name, live in self.weighting.state_dict(keep_vars=True).items():
            saved = self._saved_state.get(name)
            if saved is not None:
                torch.where(bad, saved if saved.shape == live.shape else torch.zeros_like(live), live, out=live)

    # ------------------------------------------------------------------ gradients
    def _observed_task_grads(self, batch: Any) -> torch.Tensor | None:
        """[K, P] task gradients for an observer at a step whose method reads none: the batched
        `per_task_gradients` on `batch` under a forked RNG (it draws nothing from the step's random
        streams, and image augmentation draws the shifts the step's own losses draw next), or None
        without a batched implementation (then K autograd.grad calls on the losses)."""
        if self.per_task_gradients is None or batch is None:
            return None
        device = self.shared_parameters[0].device if self.shared_parameters else torch.device("cpu")
        with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device], device_type=device.type):
            return self.per_task_gradients(batch)[1].detach()

    def _autograd_task_grads(self, losses: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """[K, P] from K autograd.grad calls (the generic path for models without a batched one);
        with a list, each call starts from that task's own loss."""
        rows = []
        for k in range(len(losses)):
            grads = torch.autograd.grad(losses[k], self.shared_parameters, retain_graph=True, allow_unused=True)
            rows.append(torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, self.shared_parameters)]))
        return torch.stack(rows)

    def _write_grads(
        self, result: WeightingResult, task_grads: torch.Tensor, head_grads: list[torch.Tensor] | None, losses: torch.Tensor
    ) -> None:
        weights = result.weights.detach()
        shared = result.shared_grad if result.shared_grad is not None else weights @ task_grads
        offset = 0
        for param in self.shared_parameters:
            size = param.numel()
            _accumulate(param, shared[offset : offset + size].view_as(param))
            offset += size
        if head_grads is not None:
            for param, grad in zip(self.task_parameters, head_grads):
                _accumulate(param, grad * weights.view(-1, *([1] * (grad.dim() - 1))))
        elif self.task_parameters:
            grads = torch.autograd.grad((weights * losses).sum(), self.task_parameters, allow_unused=True)
            for param, grad in zip(self.task_parameters, grads):
                if grad is not None:
                    _accumulate(param, grad)


Losses = Union[torch.Tensor, Sequence[torch.Tensor]]  # [K], or K scalars each with its own graph
_warned_stacked = False


def _warn_stacked(losses: torch.Tensor) -> None:
    """Once per process: a task-gradient method given torch.stack's output pays K graphs per task."""
    global _warned_stacked
    if not _warned_stacked and losses.grad_fn is not None and type(losses.grad_fn).__name__.startswith("StackBackward"):
        _warned_stacked = True
        warnings.warn(
            "MultiTaskBackward.backward got the task losses stacked into one tensor: each task's gradient is then taken "
            "through every task's graph; pass the K losses as a list (the same call, without torch.stack) to take it "
            "through its own graph only (scripts/bench_standalone.py: about 5x faster at K=10)",
            stacklevel=3,
        )


def as_loss_vector(losses: Losses) -> torch.Tensor:
    """The [K] tensor of `losses` (stacked when given as K scalars)."""
    return losses if isinstance(losses, torch.Tensor) else torch.stack(list(losses))


def _stacking(losses_at: Callable[[Params, Any], Losses]) -> Callable[[Params, Any], torch.Tensor]:
    """`losses_at` returning a [K] tensor whatever form the user's function returns."""

    def stacked(params: Params, batch: Any) -> torch.Tensor:
        return as_loss_vector(losses_at(params, batch))

    return stacked


def _nonfinite(values: torch.Tensor) -> torch.Tensor:
    """Elementwise NaN or inf (bool, same shape), in two kernels where `~torch.isfinite` takes five:
    x - x is 0 for every finite x and NaN for NaN and both infinities."""
    return (values - values) != 0


def _accumulate(param: nn.Parameter, grad: torch.Tensor) -> None:
    grad = grad.to(param.dtype)
    if param.grad is None:
        param.grad = grad.clone()
    else:
        param.grad.add_(grad)
