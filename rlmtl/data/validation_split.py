"""Held-out demos for a validation loss: the last `data.val_demos` demos of every task.

`split_validation` cuts each task's in-memory arrays at the first row of its held-out demos. The
training part gets statistics of its own demos (the agent's normalisation never sees held-out data);
the held-out part keeps them only for completeness. Streamed camera keys (read from the file per
batch) cannot be cut this way: such a run is refused naming the key.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from rlmtl.data.dataset import MultiTaskData, TaskData, summary_stats
from rlmtl.errors import ConfigError


def split_validation(data: MultiTaskData, val_demos: int, obs_keys: list[str]) -> tuple[MultiTaskData, MultiTaskData]:
    """(training data, held-out data) with the last `val_demos` demos of every task held out;
    ConfigError naming `data.val_demos` when a task would keep no training demo, or when a key the
    agent reads is streamed from the file."""
    train, held_out = [], []
    for task, part in zip(data.tasks, data.per_task):
        streamed = [key for key in obs_keys if key not in part.observations]
        if streamed:
            raise ConfigError(f"'data.val_demos': {streamed[0]!r} is read from the file per batch (data.memory_budget_gb); hold-out needs it in memory")
        if len(part.lengths) <= val_demos:
            raise ConfigError(f"'data.val_demos' = {val_demos} leaves task {task!r} no training demo (it has {len(part.lengths)})")
        keep = len(part.lengths) - val_demos
        cut = int(np.sum(part.lengths[:keep]))
        stats = dict(part.stats)
        stats["actions"] = summary_stats(part.actions[:cut])
        for key, values in part.observations.items():
            if key in stats and values.dtype.kind == "f":
                stats[key] = summary_stats(values[:cut].reshape(cut, -1))
        train.append(
            replace(
                part,
                observations={key: values[:cut] for key, values in part.observations.items()},
                actions=part.actions[:cut],
                stats=stats,
                num_demos=keep,
                demos=part.demos[:keep],
                lengths=part.lengths[:keep],
            )
        )
        held_out.append(
            replace(
                part,
                observations={key: values[cut:] for key, values in part.observations.items()},
                actions=part.actions[cut:],
                num_demos=val_demos,
                demos=part.demos[keep:],
                lengths=part.lengths[keep:],
            )
        )
    return replace(data, per_task=train), replace(data, per_task=held_out)
