"""An exponential moving average of the agent's parameters, the weights rlmtl evaluates when it is on.

After every optimizer step each averaged tensor moves towards its parameter:
`average <- average + (1 - d_t) (parameter - average)`, with `d_t = min(decay, (1 + t) / (10 + t))`
at update t (TensorFlow's `tf.train.ExponentialMovingAverage` with `num_updates`), so the first
updates follow the fast-moving early weights instead of staying near the initialisation. One fused
`torch._foreach_lerp_` on the device per step: no host sync (t is a Python count).

Buffers (the dataset normalisation) are not averaged: they are constant during training. A skipped
non-finite step leaves the parameters as they were, and the average moves towards those.
"""

from __future__ import annotations

import torch
from torch import nn


AVERAGE_PREFIX = "average."  # of each averaged parameter's entry in `ParameterAverage.state_dict`


def averaged_weights(state: dict) -> dict[str, torch.Tensor]:
    """{parameter name: averaged tensor} from a `ParameterAverage.state_dict` (e.g. a checkpoint's "ema")."""
    return {name[len(AVERAGE_PREFIX) :]: value for name, value in state.items() if name.startswith(AVERAGE_PREFIX)}


class ParameterAverage:
    """The moving average of `module`'s parameters with `decay` (see the module docstring)."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.names = [name for name, _ in module.named_parameters()]
        self.parameters = [p for _, p in module.named_parameters()]
        self.averages = [p.detach().clone() for p in self.parameters]
        self.updates = 0

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """Move the average one step towards the current parameters."""
        torch._foreach_lerp_(self.averages, [p.detach() for p in self.parameters], 1.0 - self.current_decay())
        self.updates += 1

    def averaged_state(self) -> dict[str, torch.Tensor]:
        """{parameter name: averaged tensor}, the entries of the agent's `state_dict` it replaces."""
        return dict(zip(self.names, self.averages))

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        return {"updates": self.updates, **{f"{AVERAGE_PREFIX}{name}": value for name, value in zip(self.names, self.averages)}}

    def load_state_dict(self, state: dict) -> None:
        missing = [name for name in self.names if f"{AVERAGE_PREFIX}{name}" not in state]
        if missing:
            raise KeyError(f"EMA state lacks {missing[0]}")
        for name, average in zip(self.names, self.averages):
            average.copy_(state[f"{AVERAGE_PREFIX}{name}"])
        self.updates = int(state["updates"])
