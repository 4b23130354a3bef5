"""The weighting interface.

A method is an `nn.Module` subclass registered with `@register_weighting("name")`. It declares in
`requirements` what it needs besides the K per-task losses, and implements

    combine(losses [K], context) -> WeightingResult   # before the optimizer step
    after_step(losses_after [K] | None, context)       # after it (FAMO's update, ...)

`MultiTaskBackward` (engine.py) is the only caller: it fills exactly the `StepContext` fields
that were asked for, turns the result into gradients, and never looks at method names.

Result semantics:
* `weights` [K]: the effective per-task weights, always set (they are logged every step).
* loss-level methods (no task gradients) may return `loss` (a scalar to backpropagate, e.g.
  FAMO's log-loss); when `loss` is None the engine backpropagates `sum_i weights_i * L_i`.
* methods with `requirements.task_grads` get `context.task_grads` [K, P] (each task's gradient
  of the shared parameters, from its own batch) and either return `shared_grad` [P] (gradient
  methods: PCGrad, CAGrad, ...) or only `weights` (the shared gradient is then weights @ G).
  Task-specific parameters (the heads) always receive `sum_i weights_i * grad L_i`: for pure
  gradient aggregators (weights = 1) that is each head's own unweighted gradient, as in LibMTL.

State lives in buffers (and parameters) on the model's device and is saved with the checkpoint
through `state_dict()`; `combine`/`after_step` never synchronise with the host.

Data parallelism (torchrun): `combine` receives the losses and task gradients averaged over ranks,
so every rank computes the same weights and state; see `reduces_own_statistics`.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import re
import typing
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from rlmtl.registry import Registry

Params = dict[str, torch.Tensor]


def _same(tensor: torch.Tensor) -> torch.Tensor:
    """The one-process `StepContext.reduce_mean`."""
    return tensor


def mean_over_ranks(context: "StepContext", tensors: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
    """`context.reduce_mean` of several tensors in one flat call (Nones pass through)."""
    present = [t for t in tensors if t is not None]
    if context.reduce_mean is _same or not present:
        return tensors
    flat = context.reduce_mean(torch.cat([t.reshape(-1) for t in present]))
    out, offset = [], 0
    for t in tensors:
        if t is None:
            out.append(None)
            continue
        out.append(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()
    return out


@dataclass(frozen=True)
class Requirements:
    """What a method asks for, besides the per-task losses."""

    val_batch: bool = False  # a second, independent batch per task (Auto-Lambda's meta-loss)
    post_step_losses: bool = False  # the losses on the same batch after optimizer.step() (FAMO)
    task_grads: bool = False  # per-task gradients of the shared parameters, [K, P]
    optimizer: bool = False  # the live optimizer, read-only, to mirror its step (lookahead)
    functional_losses: bool = False  # losses at other parameter values: context.losses_at(params, batch)
    primary_tasks: bool = False  # the method is meaningless without weighting.primary_tasks

    def merge(self, other: "Requirements") -> "Requirements":
        return Requirements(**{f: getattr(self, f) or getattr(other, f) for f in self.__dataclass_fields__})


@dataclass
class StepContext:
    """What a method sees at one step. Fields whose requirement is off are None."""

    step: int  # optimizer steps taken before this one (host counter, no sync)
    lr: float  # the model optimizer's current learning rate (first param group)
    shared_parameters: list[nn.Parameter]
    primary_tasks: torch.Tensor | None = None  # bool mask [K] on the device, or None (= all tasks)
    task_grads: torch.Tensor | None = None  # [K, P], P = total size of shared_parameters
    batch: Any = None
    val_batch: Any = None
    optimizer: torch.optim.Optimizer | None = None
    named_parameters: dict[str, nn.Parameter] | None = None  # every model parameter, by name
    losses_at: Callable[[Params, Any], torch.Tensor] | None = None  # (params by name, batch) -> [K]
    # mean over data-parallel ranks of a tensor computed from this rank's share of the batch
    # (identity in one process); the losses and task_grads above are already averaged
    reduce_mean: Callable[[torch.Tensor], torch.Tensor] = _same


@dataclass
class WeightingResult:
    """See the module docstring for how the engine uses each field."""

    weights: torch.Tensor
    loss: torch.Tensor | None = None
    shared_grad: torch.Tensor | None = None


class Weighting(nn.Module):
    """Base class of every method: subclasses set `requirements` and implement `combine`."""

    requirements = Requirements()
    # Under data parallelism the engine averages the losses, task gradients and post-step losses
    # over ranks. A method that computes more from `context.batch` / `val_batch` itself (through
    # `losses_at` or autograd) must average that with `context.reduce_mean` and set this to True.
    reduces_own_statistics: bool = False
    # On a non-finite step (skipped, state restored) the engine hands a method whose solver would
    # raise or fail on NaN input a finite stand-in for the task gradients; others see them as is.
    needs_finite_task_grads: bool = False
    # The method reads the real optimizer step as its own lookahead (Auto-Lambda with
    # lookahead="real"), so the real gradient must be the one its weights give: it cannot be the
    # first or second part of a composition with a gradient method.
    uses_real_step: bool = False

    def __init__(self, num_tasks: int) -> None:
        super().__init__()
        self.num_tasks = num_tasks

    @classmethod
    def params_class(cls) -> type:
        """The method's parameters as a frozen dataclass, generated once per class from the
        constructor's signature (every parameter after `num_tasks`, with its resolved type hint,
        its default and, as `metadata["help"]`, its entry in the class docstring's "Args:")."""
        made = cls.__dict__.get("_params_class")
        if made is None:
            made = params_dataclass(cls)
            cls._params_class = made
        return made

    def combine(self, losses: torch.Tensor, context: StepContext) -> WeightingResult:
        """Turn the per-task losses [K] into weights, a loss to backpropagate, or a shared gradient."""
        raise NotImplementedError

    def after_step(self, losses_after: torch.Tensor | None, context: StepContext) -> None:
        """Called after optimizer.step(); `losses_after` [K] only if `requirements.post_step_losses`."""

    def uses_val_batch(self, step: int) -> bool:
        """Whether `combine` at engine step `step` reads `context.val_batch`; a trainer samples the
        second batch only then (a method that updates every n steps needs it every n steps)."""
        return self.requirements.val_batch

    def data_parallel_problem(self) -> str | None:
        """Why this method would be wrong on several ranks, or None if it is correct there."""
        if self.requirements.functional_losses and not self.reduces_own_statistics:
            return f"weighting {type(self).__name__} evaluates losses on this rank's batch without averaging them over ranks"
        return None

    def check(self) -> None:
        """Raise if the method's state has become invalid (a flag set on the device during
        combine/after_step). The trainer calls it at log intervals, where a host sync is allowed."""


WEIGHTINGS: Registry[Callable[..., Weighting]] = Registry("weighting")


def register_weighting(name: str) -> Callable[[type[Weighting]], type[Weighting]]:
    """Class decorator: `@register_weighting("famo")`."""
    return WEIGHTINGS.register(name)


def _docstring_args(doc: str | None) -> dict[str, str]:
    """{name: text} of the "Args:" section of a Google-style docstring (continuation lines joined)."""
    entries: dict[str, str] = {}
    lines = inspect.cleandoc(doc or "").splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == "Args:"]
    if not starts:
        return entries
    section_indent = len(lines[starts[0]]) - len(lines[starts[0]].lstrip())
    entry_indent: int | None = None
    current: str | None = None
    for line in lines[starts[0] + 1 :]:
        text = line.strip()
        indent = len(line) - len(line.lstrip())
        if not text or indent <= section_indent:
            break
        entry_indent = indent if entry_indent is None else entry_indent
        match = re.match(r"(\w+)(?:\s*\([^)]*\))?:\s*(.*)", text)
        if indent == entry_indent and match:
            current = match.group(1)
            entries[current] = match.group(2)
        elif current is not None:
            entries[current] = f"{entries[current]} {text}".strip()
    return entries


def params_dataclass(factory: Callable[..., Any]) -> type:
    """A frozen dataclass of the parameters `factory` (a Weighting class or a factory function)
    takes after `num_tasks`: field types from `typing.get_type_hints`, the signature's defaults,
    `metadata["help"]` from the docstring's "Args:" section. `**kwargs` are not listed."""
    target = factory.__init__ if isinstance(factory, type) else factory
    parameters = list(inspect.signature(target).parameters.values())
    names = [p.name for p in parameters]
    start = names.index("num_tasks") + 1 if "num_tasks" in names else int(isinstance(factory, type))
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # noqa: BLE001  (an annotation that does not resolve: left unchecked)
        hints = {}
    # help: the docstring of the class that defines the constructor, then the class's own
    owner = next((k for k in factory.__mro__ if "__init__" in k.__dict__), factory) if isinstance(factory, type) else factory
    helps = {
        **_docstring_args(getattr(target, "__doc__", None)),
        **_docstring_args(owner.__doc__),
        **_docstring_args(getattr(factory, "__doc__", None)),
    }
    fields = []
    for parameter in parameters[start:]:
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        spec: dict[str, Any] = {"metadata": {"help": helps.get(parameter.name, "")}}
        if isinstance(parameter.default, (list, dict, set)):
            spec["default_factory"] = lambda value=parameter.default: copy.deepcopy(value)
        elif parameter.default is not inspect.Parameter.empty:
            spec["default"] = parameter.default
        fields.append((parameter.name, hints.get(parameter.name, Any), dataclasses.field(**spec)))
    name = getattr(factory, "__name__", "Weighting")
    namespace = {"__module__": getattr(factory, "__module__", __name__), "__doc__": f"Parameters of {name} (see its docstring)."}
    return dataclasses.make_dataclass(f"{name}Params", fields, frozen=True, kw_only=True, namespace=namespace)


def params_class_of(entry: Callable[..., Any]) -> type:
    """The parameter dataclass of a registered method (a Weighting subclass or a factory)."""
    method = getattr(entry, "params_class", None)
    return method() if callable(method) else params_dataclass(entry)


def make_weighting(name: str, num_tasks: int, params: dict[str, Any] | None = None) -> Weighting:
    """Instantiate a method by name. `a+b` composes a weighting `a` with a gradient method `b`
    (e.g. `auto_lambda+cagrad`); `params` then takes `{"a": {...}, "b": {...}}` or flat keys
    meant for `a`. Unknown parameters raise TypeError naming them."""
    params = dict(params or {})
    if "+" in name:
        from rlmtl.weighting.compose import Composite

        first, second = name.split("+", 1)
        inner = {k: params.pop(k) for k in (first, second) if isinstance(params.get(k), dict)}
        return Composite(
            make_weighting(first, num_tasks, inner.get(first, params)), make_weighting(second, num_tasks, inner.get(second, {}))
        )
    cls = WEIGHTINGS.get(name)
    try:
        return cls(num_tasks, **params)
    except TypeError as error:
        raise TypeError(f"weighting {name!r}: bad parameters {params} ({error})") from None
