"""What the trainer, the weighting engine, the TAG probe and the evaluator need from an agent.

`MultiTaskAgent` is that interface: K per-task losses from a [K, B] batch, the split of its
parameters into shared (the encoder) and task-specific (the heads), every task's gradient of the
shared parameters from its own batch (batched, one backward), actions for observations of mixed
tasks, and the per-task normalisation it takes from the dataset. Its checkpointed state is its
`state_dict` (parameters and buffers). rlmtl's `MultiTaskBC` (agents/bc.py) implements it; the
weighting engine is wired to any implementation with `MultiTaskBackward.for_agent`
(rlmtl/weighting/engine.py).

Agents are registered by name in `AGENTS` (config key `agent.name`, `rlmtl list`, plugins): an
entry is a factory `(obs_shapes, action_dim, num_tasks, image_size, agent_config) -> agent`, such
as an agent class whose constructor takes those arguments. Adding an agent is one file with a
registered class (`tests/helpers/plain_agent.py` is a minimal second one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from rlmtl.registry import Registry

if TYPE_CHECKING:
    from rlmtl.config import AgentConfig

# {"obs": {key: [K, B, ...]}, "actions": [K, B, A]}: B samples of each of the K tasks
Batch = dict[str, Any]


@runtime_checkable
class MultiTaskAgent(Protocol):
    """A multi-task policy: one shared encoder, one head per task (an `nn.Module`)."""

    num_tasks: int
    obs_keys: list[str]  # the observation keys it reads (what `act_batch` is given)
    # actions per prediction: 1, or H for an action-chunking head, whose batches carry [K, B, H, A]
    # targets and "action_valid" [K, B, H], whose `act_batch` returns [N, H, A] (the evaluator
    # ensembles the chunks over an episode, rlmtl/evaluation/temporal_ensemble.py)
    action_horizon: int
    ensemble_decay: float  # k of the temporal ensemble's weights exp(-k i) (used when action_horizon > 1)

    def task_losses(self, batch: Batch) -> torch.Tensor:
        """Per-task losses [K] of a [K, B] batch, with their graph."""
        ...

    def forward(self, batch: Batch) -> torch.Tensor:
        """The K losses [K] of a [K, B] batch in the form `torch.func.functional_call(agent,
        params, (batch,))` evaluates at other parameters (lookahead methods, the TAG probe)."""
        ...

    def shared_task_gradients(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(losses [K], {name in `named_parameters()`: [K, *shape]} for every shared parameter):
        row k is task k's gradient from task k's batch alone (the TAG probe's lookahead steps)."""
        ...

    def gradient_rows(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """(losses [K] detached, shared gradients [K, P] in `shared_parameters()` order, one
        [K, *shape] gradient per task-specific parameter, row k = task k's own block)."""
        ...

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters every task's loss depends on."""
        ...

    def task_specific_parameters(self) -> list[nn.Parameter]:
        """Parameters of the per-task heads, each stacked over tasks ([K, ...]: row k is task k's)."""
        ...

    def act_batch(self, observations: dict[str, torch.Tensor], task_ids: torch.Tensor) -> torch.Tensor:
        """Observations {key: [N, ...]} of tasks `task_ids` [N] -> env actions [N, A]."""
        ...

    def act(self, observation: dict[str, np.ndarray], task: int) -> np.ndarray:
        """One env step of task index `task` -> action [A]."""
        ...

    def set_statistics(self, per_task_stats: list[dict[str, dict[str, np.ndarray]]]) -> None:
        """Take the dataset's per-task statistics ({key: {"mean", "std", "min", "max"}} per task,
        actions under "actions") before training; they are part of the checkpointed state."""
        ...


# (obs_shapes {key: shape}, action_dim, num_tasks, image_size, agent config) -> an nn.Module agent
AgentFactory = Callable[[dict[str, tuple[int, ...]], int, int, int, "AgentConfig"], MultiTaskAgent]
AGENTS: Registry[AgentFactory] = Registry("agent")
