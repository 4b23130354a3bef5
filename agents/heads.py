"""One head per task, all evaluated in one batched operation (no Python loop over tasks)."""

from __future__ import annotations

import math

import torch
from torch import nn


class TaskHeads(nn.Module):
    """K independent MLP heads stored as stacked weights.

    `forward_all(features [K, B, F]) -> [K, B, A]` applies head k to row k with `torch.baddbmm`;
    `forward_select(features [N, F], task_ids [N]) -> [N, A]` applies each sample's own head.
    `hidden_dim = 0` gives linear heads.
    """

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
        x = features
        for layer, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(bias, x, weight)
            if layer < len(self.weights) - 1:
                x = torch.relu(x)
        return x

    def forward_select(self, features: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        x = features.unsqueeze(1)  # [N, 1, F]
        for layer, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(bias[task_ids], x, weight[task_ids])
            if layer < len(self.weights) - 1:
                x = torch.relu(x)
        return x.squeeze(1)
