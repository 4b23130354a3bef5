"""A second agent, registered as `plain`: the agent interface (agents/base.py) met in the plainest
way, to show that the trainer, the weighting engine, the TAG probe and the evaluator need nothing
else. It shares no code with `MultiTaskBC`: one trunk layer over the first observation key and a
one-hot task id, one linear head per task (stacked [K, H, A] as the interface asks), the K losses
by a Python loop over tasks, and each task's gradient by its own `torch.autograd.grad` call.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from rlmtl.agents.base import AGENTS, Batch


@AGENTS.register("plain")
class PlainAgent(nn.Module):
    """Trunk Linear+ReLU on [z-scored obs, one-hot task] -> task k's linear head -> tanh; MSE to the
    actions scaled to [-1, 1] per task."""

    def __init__(self, obs_shapes: dict[str, tuple[int, ...]], action_dim: int, num_tasks: int, image_size: int, config: Any) -> None:
        super().__init__()
        self.num_tasks = num_tasks
        self.obs_keys = [config.obs_keys[0]]
        self.action_horizon = 1  # one action per prediction
        self.ensemble_decay = 0.0
        in_dim = math.prod(obs_shapes[self.obs_keys[0]])
        self.trunk = nn.Linear(in_dim + num_tasks, config.hidden_dim)
        self.head_weight = nn.Parameter(torch.randn(num_tasks, config.hidden_dim, action_dim) / math.sqrt(config.hidden_dim))
        self.head_bias = nn.Parameter(torch.zeros(num_tasks, action_dim))
        self.register_buffer("obs_mean", torch.zeros(num_tasks, in_dim))
        self.register_buffer("obs_std", torch.ones(num_tasks, in_dim))
        self.register_buffer("action_center", torch.zeros(num_tasks, action_dim))
        self.register_buffer("action_scale", torch.ones(num_tasks, action_dim))

    def set_statistics(self, per_task_stats: list[dict[str, dict[str, np.ndarray]]]) -> None:
        key = self.obs_keys[0]
        self.obs_mean.copy_(torch.as_tensor(np.stack([s[key]["mean"].reshape(-1) for s in per_task_stats])))
        self.obs_std.copy_(torch.as_tensor(np.stack([np.maximum(s[key]["std"].reshape(-1), 1e-6) for s in per_task_stats])))
        low = np.stack([s["actions"]["min"] for s in per_task_stats])
        high = np.stack([s["actions"]["max"] for s in per_task_stats])
        self.action_center.copy_(torch.as_tensor((high + low) / 2))
        self.action_scale.copy_(torch.as_tensor(np.maximum((high - low) / 2, 1e-6)))

    def _normalised_prediction(self, observation: torch.Tensor, task: int) -> torch.Tensor:
        """observation [N, ...] of task `task` -> its head's output [N, A] in [-1, 1]."""
        x = (observation.reshape(len(observation), -1).float() - self.obs_mean[task]) / self.obs_std[task]
        onehot = torch.zeros(len(x), self.num_tasks, device=x.device)
        onehot[:, task] = 1.0
        features = torch.relu(self.trunk(torch.cat([x, onehot], dim=1)))
        return torch.tanh(features @ self.head_weight[task] + self.head_bias[task])

    def task_losses(self, batch: Batch) -> torch.Tensor:
        key = self.obs_keys[0]
        losses = []
        for task in range(self.num_tasks):
            target = (batch["actions"][task] - self.action_center[task]) / self.action_scale[task]
            losses.append((self._normalised_prediction(batch["obs"][key][task], task) - target).pow(2).mean())
        return torch.stack(losses)

    def forward(self, batch: Batch) -> torch.Tensor:
        return self.task_losses(batch)

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.trunk.parameters())

    def task_specific_parameters(self) -> list[nn.Parameter]:
        return [self.head_weight, self.head_bias]

    def _task_gradients(self, batch: Batch) -> tuple[torch.Tensor, list[list[torch.Tensor]]]:
        """(losses [K] detached, per task the gradients of (shared..., head_weight, head_bias))."""
        losses = self.task_losses(batch)
        parameters = [*self.shared_parameters(), *self.task_specific_parameters()]
        grads = [list(torch.autograd.grad(losses[k], parameters, retain_graph=k < self.num_tasks - 1)) for k in range(self.num_tasks)]
        return losses.detach(), grads

    def shared_task_gradients(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        losses, grads = self._task_gradients(batch)
        names = [f"trunk.{name}" for name, _ in self.trunk.named_parameters()]
        return losses, {name: torch.stack([g[i] for g in grads]) for i, name in enumerate(names)}

    def gradient_rows(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        losses, grads = self._task_gradients(batch)
        shared_count = len(self.shared_parameters())
        shared = torch.stack([torch.cat([g.reshape(-1) for g in task[:shared_count]]) for task in grads])
        heads = [torch.stack([task[shared_count + i][k] for k, task in enumerate(grads)]) for i in range(2)]
        return losses, shared, heads

    @torch.no_grad()
    def act_batch(self, observations: dict[str, torch.Tensor], task_ids: torch.Tensor) -> torch.Tensor:
        rows = [
            self._normalised_prediction(observations[self.obs_keys[0]][n : n + 1], int(task)) * self.action_scale[task] + self.action_center[task]
            for n, task in enumerate(task_ids.tolist())
        ]
        return torch.cat(rows)

    def act(self, observation: dict[str, np.ndarray], task: int) -> np.ndarray:
        batch = {self.obs_keys[0]: torch.as_tensor(np.asarray(observation[self.obs_keys[0]])[None])}
        return self.act_batch(batch, torch.tensor([task]))[0].numpy()
