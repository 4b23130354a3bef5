"""The multi-task behaviour-cloning agent: shared encoder, per-task heads, per-task normalisation.

Vector observations are z-scored with each task's dataset mean/std; actions are scaled to [-1, 1]
with each task's dataset min/max (a dimension that never varies keeps scale 1), predicted through
`tanh`, and mapped back in `act`. The BC loss is the MSE in the normalised action space, one scalar
per task: `task_losses(batch) -> [K]`, which is what the weighting module combines.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from agents.encoders import ObservationEncoder, random_shift
from agents.heads import TaskHeads


class MultiTaskBC(nn.Module):
    """Shared `ObservationEncoder` + `TaskHeads`.

    Args:
        obs_shapes: observation key -> per-step shape, for the keys the agent reads.
        action_dim: A.
        num_tasks: K.
        image_size: H = W of camera keys (`rgb_<camera>`).
        options: the agent section of the config (encoder names, widths, conditioning).
    """

    def __init__(self, obs_shapes: dict[str, tuple[int, ...]], action_dim: int, num_tasks: int, image_size: int, options: Any) -> None:
        super().__init__()
        self.obs_keys = list(obs_shapes)
        self.vector_keys = [k for k in self.obs_keys if not k.startswith("rgb_")]
        self.image_keys = [k for k in self.obs_keys if k.startswith("rgb_")]
        self.num_tasks = num_tasks
        self.action_dim = action_dim
        self.image_augment = bool(getattr(options, "image_augment", True))
        vector_dim = sum(int(np.prod(obs_shapes[k])) for k in self.vector_keys)
        self.encoder = ObservationEncoder(
            vector_dim=vector_dim,
            cameras=self.image_keys,
            image_size=image_size,
            num_tasks=num_tasks,
            task_conditioning=options.task_conditioning,
            lowdim_encoder=options.lowdim_encoder,
            image_encoder=options.image_encoder,
            hidden_dim=options.hidden_dim,
            num_layers=options.num_layers,
            image_channels=options.image_channels,
        )
        self.heads = TaskHeads(num_tasks, self.encoder.out_dim, action_dim, options.head_hidden_dim)
        self.register_buffer("obs_mean", torch.zeros(num_tasks, vector_dim))
        self.register_buffer("obs_std", torch.ones(num_tasks, vector_dim))
        self.register_buffer("action_center", torch.zeros(num_tasks, action_dim))
        self.register_buffer("action_scale", torch.ones(num_tasks, action_dim))

    # ------------------------------------------------------------------ statistics
    def set_statistics(self, per_task_stats: list[dict[str, dict[str, np.ndarray]]]) -> None:
        """Load normalisation from the dataset's per-task statistics (one dict per task)."""
        if self.vector_keys:
            mean = np.stack([np.concatenate([s[k]["mean"].reshape(-1) for k in self.vector_keys]) for s in per_task_stats])
            std = np.stack([np.concatenate([s[k]["std"].reshape(-1) for k in self.vector_keys]) for s in per_task_stats])
            self.obs_mean.copy_(torch.as_tensor(mean))
            self.obs_std.copy_(torch.as_tensor(np.where(std < 1e-6, 1.0, std)))
        low = np.stack([s["actions"]["min"] for s in per_task_stats])
        high = np.stack([s["actions"]["max"] for s in per_task_stats])
        half_range = (high - low) / 2
        self.action_center.copy_(torch.as_tensor((high + low) / 2))
        self.action_scale.copy_(torch.as_tensor(np.where(half_range < 1e-6, 1.0, half_range)))

    # ------------------------------------------------------------------ forward
    def _encode(self, observations: dict[str, torch.Tensor], task_ids: torch.Tensor) -> torch.Tensor:
        """observations {key: [N, ...]}, task_ids [N] -> features [N, F]."""
        vector = None
        if self.vector_keys:
            raw = torch.cat([observations[k].reshape(task_ids.shape[0], -1).float() for k in self.vector_keys], dim=-1)
            vector = (raw - self.obs_mean[task_ids]) / self.obs_std[task_ids]
        images = {}
        for key in self.image_keys:
            image = observations[key].permute(0, 3, 1, 2).float() / 255.0
            images[key] = random_shift(image) if (self.training and self.image_augment) else image
        return self.encoder(vector, images, task_ids)

    def predict_all(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        """observations {key: [K, B, ...]} (row k from task k) -> normalised actions [K, B, A]."""
        k, b = next(iter(observations.values())).shape[:2]
        flat = {key: value.reshape(k * b, *value.shape[2:]) for key, value in observations.items()}
        task_ids = torch.arange(k, device=self.obs_mean.device).repeat_interleave(b)
        features = self._encode(flat, task_ids).reshape(k, b, -1)
        return torch.tanh(self.heads.forward_all(features))

    def normalize_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """[K, B, A] env actions -> [-1, 1] per task."""
        return ((actions - self.action_center[:, None]) / self.action_scale[:, None]).clamp(-1.0, 1.0)

    def task_losses(self, batch: dict[str, Any]) -> torch.Tensor:
        """batch {"obs": {key: [K, B, ...]}, "actions": [K, B, A]} -> MSE per task [K]."""
        prediction = self.predict_all(batch["obs"])
        target = self.normalize_actions(batch["actions"])
        return (prediction - target).pow(2).mean(dim=(1, 2))

    @torch.no_grad()
    def act_batch(self, observations: dict[str, torch.Tensor], task_ids: torch.Tensor) -> torch.Tensor:
        """observations {key: [N, ...]}, task_ids [N] -> env actions [N, A]."""
        normalised = torch.tanh(self.heads.forward_select(self._encode(observations, task_ids), task_ids))
        return normalised * self.action_scale[task_ids] + self.action_center[task_ids]

    @torch.no_grad()
    def act(self, observation: dict[str, np.ndarray], task: int) -> np.ndarray:
        """One env step: numpy observation of task index `task` -> numpy action [A]."""
        device = self.obs_mean.device
        batch = {k: torch.as_tensor(np.asarray(observation[k])[None], device=device) for k in self.obs_keys}
        ids = torch.tensor([task], device=device)
        return self.act_batch(batch, ids)[0].cpu().numpy()

    # ------------------------------------------------------------------ parameter groups
    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters every task's loss depends on (the encoder)."""
        return list(self.encoder.parameters())

    def task_specific_parameters(self) -> list[nn.Parameter]:
        """Parameters of the per-task heads (stacked over tasks)."""
        return list(self.heads.parameters())
