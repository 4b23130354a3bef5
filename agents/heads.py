"""One head per task, all evaluated in one batched operation (no Python loop over tasks).

The K heads are stacked weights (`weights[l]`: [K, in, out], `biases[l]`: [K, 1, out]).
`forward_all` runs head k on task k's rows (one batched matmul per layer), `selected` each
sample's own head for rollouts, and `apply_head` ONE head from its slices, a pure function the
agent maps over tasks with `torch.func.vmap` where it needs per-task gradients.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn


def apply_head(weights: list[torch.Tensor], biases: list[torch.Tensor], features: torch.Tensor) -> torch.Tensor:
    """One task's head: features [B, F] -> [B, A] through ReLU layers (weights [in, out], biases [1, out])."""
    x = features
    for layer, (weight, bias) in enumerate(zip(weights, biases)):
        x = torch.addmm(bias, x, weight) if x.dim() == 2 else x @ weight + bias
        if layer < len(weights) - 1:
            x = torch.relu(x)
    return x


class TaskHeads(nn.Module):
    """K independent MLP heads stored as stacked weights; `hidden_dim = 0` gives linear heads."""

    def __init__(self, num_tasks: int, in_dim: int, out_dim: int, hidden_dim: int = 0) -> None:
        super().__init__()
        widths = [in_dim] + ([hidden_dim] if hidden_dim else []) + [out_dim]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            bound = 1.0 / math.sqrt(fan_in)
            self.weights.append(nn.Parameter(torch.empty(num_tasks, fan_in, fan_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(num_tasks, 1, fan_out).uniform_(-bound, bound)))

    def forward_all(self, features: torch.Tensor) -> torch.Tensor:
        """features [K, B, F] -> [K, B, A], head k on row k: one batched matmul per layer."""
        return _apply_stacked(list(self.weights), list(self.biases), features)

    def selected(self, task_ids: torch.Tensor, features: torch.Tensor) -> Callable[[torch.Tensor | None], torch.Tensor]:
        """The heads of tasks `task_ids` [N] on features [N, F], gathered and multiplied once: a
        function of the head's remaining input columns ([N, C], a denoiser's noisy action and step;
        None for heads that take the features only) -> [N, A]. A head called several times per
        action pays the features' part of its first layer once."""
        # index_select copies whole [in, out] slices; advanced indexing (weight[task_ids]) gathers
        # element by element, several times slower for a hidden layer's weights on a CPU
        weights = [weight.index_select(0, task_ids) for weight in self.weights]
        biases = [bias.index_select(0, task_ids) for bias in self.biases]
        width = features.shape[-1]
        first = torch.baddbmm(biases[0], features.unsqueeze(1), weights[0][:, :width])  # [N, 1, out]

        def run(rest: torch.Tensor | None) -> torch.Tensor:
            x = first if rest is None else torch.baddbmm(first, rest.unsqueeze(1), weights[0][:, width:])
            if len(weights) > 1:
                x = _apply_stacked(weights[1:], biases[1:], torch.relu(x))
            return x.squeeze(1)

        return run


def _apply_stacked(weights: list[torch.Tensor], biases: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """G heads at once: x [G, B, F] -> [G, B, A], head g (weights[l][g] [in, out], biases[l][g] [1, out]) on row g."""
    for layer, (weight, bias) in enumerate(zip(weights, biases)):
        x = torch.baddbmm(bias, x, weight)
        if layer < len(weights) - 1:
            x = torch.relu(x)
    return x
