"""What the trainer, the weighting engine, the TAG probe and the evaluator need from an agent.

`MultiTaskAgent` is that interface: K per-task losses from a [K, B] batch, the split of its
parameters into shared (the encoder) and task-specific (the heads), every task's gradient of the
shared parameters from its own batch (batched, one backward), and actions for observations of
mixed tasks. rlmtl's `MultiTaskBC` (agents/bc.py) implements it; the weighting engine is wired to
any implementation with `MultiTaskBackward.for_agent` (rlmtl/weighting/engine.py).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

# {"obs": {key: [K, B, ...]}, "actions": [K, B, A]}: B samples of each of the K tasks
Batch = dict[str, Any]


@runtime_checkable
class MultiTaskAgent(Protocol):
    """A multi-task policy: one shared encoder, one head per task (an `nn.Module`)."""

    num_tasks: int
    obs_keys: list[str]  # the observation keys it reads (what `act_batch` is given)

    def task_losses(self, batch: Batch) -> torch.Tensor:
        """Per-task losses [K] of a [K, B] batch, with their graph."""
        ...

    def per_task_gradients(self, batch: Batch) -> tuple[torch.Tensor, dict[str, Any]]:
        """(losses [K], gradients by parameter tree): the encoder entries are [K, *shape], task k's
        gradient of the shared parameter from task k's batch alone (for the TAG probe)."""
        ...

    def gradient_rows(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """(losses [K] detached, shared gradients [K, P] in `shared_parameters()` order, one
        [K, *shape] gradient per task-specific parameter, row k = task k's own block)."""
        ...

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters every task's loss depends on."""
        ...

    def task_specific_parameters(self) -> list[nn.Parameter]:
        """Parameters of the per-task heads (stacked over tasks)."""
        ...

    def act_batch(self, observations: dict[str, torch.Tensor], task_ids: torch.Tensor) -> torch.Tensor:
        """Observations {key: [N, ...]} of tasks `task_ids` [N] -> env actions [N, A]."""
        ...

    def act(self, observation: dict[str, np.ndarray], task: int) -> np.ndarray:
        """One env step of task index `task` -> action [A]."""
        ...
