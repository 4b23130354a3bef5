"""Task-balanced batches: every step draws `batch_per_task` samples from each task.

One draw of uniform numbers from a seeded CPU generator picks the [K, B] flat indices of a step
(`IndexStream`), so the sampler state (the generator) is checkpointed for exact resume. Under data
parallelism every rank draws the same global batch and keeps its own slice.

Two samplers serve the same batches from the same index stream:
- `TaskBalancedSampler`: every key in flat tensors on the training device (`FlatData`, built once
  and shared by the training and validation samplers); a step costs one gather per key;
- `rlmtl.data.streaming.StreamingSampler`: the large image keys stay in the HDF5 file and are read
  per batch by a prefetch thread, for datasets larger than `data.memory_budget_gb`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rlmtl.data.dataset import MultiTaskData


@dataclass
class FlatData:
    """The in-memory keys of all tasks, concatenated task after task, on the training device."""

    counts: torch.Tensor  # [K] float64: steps per task
    offsets: torch.Tensor  # [K] long: first flat row of each task
    observations: dict[str, torch.Tensor]  # key -> [N, ...]
    actions: torch.Tensor  # [N, A]
    demo_ends: torch.Tensor  # [N] long: one past the last flat row of each row's demo

    @classmethod
    def build(cls, data: MultiTaskData, obs_keys: list[str], device: torch.device) -> "FlatData":
        """Flatten `obs_keys` (those held in memory) and the actions of every task onto `device`."""
        counts = np.array([t.actions.shape[0] for t in data.per_task])
        ends = np.concatenate([_demo_ends(t.lengths or [t.actions.shape[0]]) for t in data.per_task])
        ends = ends + np.repeat(np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)  # flat rows
        return cls(
            counts=torch.as_tensor(counts, dtype=torch.float64),
            offsets=torch.as_tensor(np.concatenate([[0], np.cumsum(counts)[:-1]]), dtype=torch.long),
            observations={
                key: torch.as_tensor(np.concatenate([t.observations[key] for t in data.per_task])).to(device) for key in obs_keys
            },
            actions=torch.as_tensor(np.concatenate([t.actions for t in data.per_task])).to(device),
            demo_ends=torch.as_tensor(ends, dtype=torch.long).to(device),
        )

    def action_targets(self, indices: torch.Tensor, horizon: int) -> dict[str, torch.Tensor]:
        """The action targets of rows `indices` [K, B]: {"actions": [K, B, A]} for horizon 1, else
        the next `horizon` actions {"actions": [K, B, H, A], "action_valid": [K, B, H]}, where a
        step past its demo's end repeats the last action and is marked invalid (ACT's `is_pad`)."""
        if horizon == 1:
            return {"actions": self.actions[indices]}
        steps = indices.unsqueeze(-1) + torch.arange(horizon, device=indices.device)
        last = (self.demo_ends[indices] - 1).unsqueeze(-1)
        return {"actions": self.actions[torch.minimum(steps, last)], "action_valid": steps <= last}


def _demo_ends(lengths: list[int]) -> np.ndarray:
    """[sum(lengths)]: for each row of demos of these lengths laid end to end, one past its demo's last row."""
    ends = np.cumsum(lengths)
    return np.repeat(ends, lengths)


class IndexStream:
    """The seeded stream of [K, B_local] flat indices (this rank's share of each global batch)."""

    def __init__(self, counts: torch.Tensor, offsets: torch.Tensor, batch_per_task: int, seed: int, rank: int = 0, world_size: int = 1):
        if batch_per_task % world_size:
            raise ValueError(f"train.batch_per_task={batch_per_task} is not divisible by world size {world_size}")
        self.counts, self.offsets = counts, offsets
        self.batch_per_task = batch_per_task
        self.rank, self.world_size = rank, world_size
        self.generator = torch.Generator().manual_seed(seed)

    def next(self) -> torch.Tensor:
        """Flat indices [K, B_local] of the next global batch's share of this rank."""
        uniform = torch.rand(len(self.counts), self.batch_per_task, generator=self.generator, dtype=torch.float64)
        local = self.batch_per_task // self.world_size
        uniform = uniform[:, self.rank * local : (self.rank + 1) * local]
        return (uniform * self.counts[:, None]).long() + self.offsets[:, None]


class TaskBalancedSampler:
    """Draws [K, B] batches from in-memory per-task data.

    Args:
        flat: the tasks' data on the device (`FlatData.build`).
        batch_per_task: B (the global batch per task; a rank keeps B / world_size of it).
        seed: seed of the index generator.
        device: where the batches live.
        rank, world_size: this process's slice of every task's batch.
        horizon: actions per target (an action-chunking head's H; `FlatData.action_targets`).
    """

    def __init__(
        self, flat: FlatData, batch_per_task: int, seed: int, device: torch.device, rank: int = 0, world_size: int = 1, horizon: int = 1
    ) -> None:
        self.flat = flat
        self.horizon = horizon
        self.indices = IndexStream(flat.counts, flat.offsets, batch_per_task, seed, rank, world_size)
        self.batch_per_task = batch_per_task
        self.device = device

    def sample_indices(self) -> torch.Tensor:
        """Flat indices [K, B_local] of this rank's share of one global batch."""
        return self.indices.next()

    def sample(self) -> dict[str, Any]:
        """One batch: {"obs": {key: [K, B, ...]}, "actions": [K, B, A]} on the device (with a
        horizon H > 1: "actions" [K, B, H, A] and "action_valid" [K, B, H])."""
        indices = self.sample_indices().to(self.device, non_blocking=True)
        return {
            "obs": {key: values[indices] for key, values in self.flat.observations.items()},
            **self.flat.action_targets(indices, self.horizon),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.indices.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.indices.generator.set_state(state["generator"])

    def close(self) -> None:
        """Nothing to release (the streaming sampler stops its reader here)."""
