"""Task-balanced batches: every step draws `batch_per_task` samples from each task.

The data of all tasks lives in flat tensors (on the training device) with per-task offsets; one
draw of uniform numbers from a seeded CPU generator picks the indices, so a step costs one gather
per observation key and the sampler state (the generator) is checkpointed for exact resume.
Under data parallelism every rank draws the same global batch and keeps its own slice.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rlmtl.data.dataset import MultiTaskData


class TaskBalancedSampler:
    """Draws [K, B] batches from in-memory per-task data.

    Args:
        data: the dataset's tasks.
        obs_keys: observation keys to serve.
        batch_per_task: B (the global batch per task; a rank keeps B / world_size of it).
        seed: seed of the index generator.
        device: where the data and batches live.
        rank, world_size: this process's slice of every task's batch.
    """

    def __init__(
        self,
        data: MultiTaskData,
        obs_keys: list[str],
        batch_per_task: int,
        seed: int,
        device: torch.device,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_per_task % world_size:
            raise ValueError(f"train.batch_per_task={batch_per_task} is not divisible by world size {world_size}")
        self.batch_per_task = batch_per_task
        self.rank, self.world_size = rank, world_size
        counts = np.array([t.actions.shape[0] for t in data.per_task])
        self.counts = torch.as_tensor(counts, dtype=torch.float64)
        self.offsets = torch.as_tensor(np.concatenate([[0], np.cumsum(counts)[:-1]]), dtype=torch.long)
        self.observations = {
            key: torch.as_tensor(np.concatenate([t.observations[key] for t in data.per_task])).to(device) for key in obs_keys
        }
        self.actions = torch.as_tensor(np.concatenate([t.actions for t in data.per_task])).to(device)
        self.device = device
        self.generator = torch.Generator().manual_seed(seed)

    def sample_indices(self) -> torch.Tensor:
        """Flat indices [K, B_local] of this rank's share of one global batch."""
        uniform = torch.rand(len(self.counts), self.batch_per_task, generator=self.generator, dtype=torch.float64)
        local = self.batch_per_task // self.world_size
        uniform = uniform[:, self.rank * local : (self.rank + 1) * local]
        return (uniform * self.counts[:, None]).long() + self.offsets[:, None]

    def sample(self) -> dict[str, Any]:
        """One batch: {"obs": {key: [K, B, ...]}, "actions": [K, B, A]} on the device."""
        indices = self.sample_indices().to(self.device, non_blocking=True)
        return {
            "obs": {key: values[indices] for key, values in self.observations.items()},
            "actions": self.actions[indices],
        }

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
