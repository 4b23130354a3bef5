"""Inter-task affinity probe of TAG (Fifty et al., "Efficiently Identifying Task Groupings for
Multi-Task Learning", NeurIPS 2021, arXiv 2109.04617).

At a probe step, for every source task i: a lookahead of the SHARED parameters along task i's own
gradient, mirroring the real optimizer's step (`lookahead.virtual_step`: SGD with momentum and
weight decay, Adam, AdamW; task-specific parameters do not move), then every recipient task j's
loss on its own batch at the lookahead parameters:

    Z[i -> j] = 1 - L_j(theta_s'(i)) / L_j(theta_s)          (affinity[i, j]: source i, recipient j)

The paper's definition; both official codes additionally divide by the learning rate, which only
rescales Z between probes when the rate changes (cosine schedule), so rlmtl reports Z as defined and
offers `divide_by_lr` for the official convention. The K lookaheads are evaluated in ONE vmapped
call over the K parameter sets (`losses_at_many`), never by mutating the live model. Probes are
accumulated on the device; the mean over probes is TAG's affinity matrix.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from rlmtl.weighting.lookahead import losses_at_many, virtual_step

# `rlmtl affinity`'s probe interval: one probe costs about 7-8 training steps of the default MT10
# agent on a CPU (K lookaheads, K x K lookahead losses), so every 25 steps keeps training within
# 1.3x (scripts/benchmark.py measures it); TAG's signal is a mean over many probes.
DEFAULT_PROBE_EVERY = 25

Params = dict[str, torch.Tensor]


class AffinityProbe(nn.Module):
    """Accumulates Z [K, K] over probes; state in buffers (checkpointed with the run).

    Args:
        num_tasks: K.
        divide_by_lr: report Z / lr as the official TAG code does (default False: the paper's Z).
    """

    def __init__(self, num_tasks: int, divide_by_lr: bool = False) -> None:
        super().__init__()
        self.divide_by_lr = divide_by_lr
        self.register_buffer("total", torch.zeros(num_tasks, num_tasks))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def probe(
        self,
        losses: torch.Tensor,
        task_grads: dict[str, torch.Tensor],
        named_parameters: dict[str, nn.Parameter],
        optimizer: torch.optim.Optimizer,
        losses_at: Callable[[Params, Any], torch.Tensor],
        batch: Any,
    ) -> torch.Tensor:
        """One probe: losses [K] at theta, task_grads {shared name: [K, *shape]} (task i's gradient
        from its own batch). Returns this probe's Z [K, K] and adds it to the running total."""
        shared = {name: named_parameters[name] for name in task_grads}
        # virtual_step is elementwise: gradients with a leading K give K lookaheads at once
        lookaheads = virtual_step(optimizer, shared, task_grads)  # {name: [K, *shape]}
        fixed = {name: p.detach() for name, p in named_parameters.items() if name not in task_grads}
        after = losses_at_many(losses_at, {n: v.detach() for n, v in lookaheads.items()}, fixed, batch)  # [K source, K recipient]
        affinity = 1.0 - after / losses.detach().unsqueeze(0)
        if self.divide_by_lr:
            affinity = affinity / optimizer.param_groups[0]["lr"]
        self.total += affinity.to(self.total.dtype)
        self.count += 1
        return affinity

    def affinity(self) -> torch.Tensor:
        """Mean Z over the probes so far, [K, K] (source i, recipient j)."""
        return self.total / self.count.clamp_min(1)
