"""Gradient-conflict diagnostics: how the K tasks' gradients of the shared parameters relate.

Every `diagnostics.every` steps (the step numbers the log uses: 1-based, after the update) the
trainer hands this monitor the step's per-task gradients of the shared parameters, G [K, P], row k
= task k's gradient from its own batch at the parameters the step starts from. They are the rows
the gradient methods read (PCGrad, CAGrad, ...: the engine passes its own rows, no second backward);
for every other method the engine computes them with the same one vmapped backward at that step
only (`MultiTaskBackward.backward(observe_task_grads=)`). Under torchrun they are averaged over
ranks in the engine's all-reduce, so every rank measures the gradients of the global batch.

From G, on the device:

    norms[k]     = |g_k|                                         [K]
    cosine[i, j] = g_i . g_j / (|g_i| |g_j|), 0 if either is 0   [K, K]   (NaN for a non-finite g)
    fraction     = share of the K(K-1)/2 pairs i < j with cosine < 0 (conflicting pairs)
    mean_cosine  = mean of cosine over those pairs

The results stay on the device until the next log step, where `take` reads every pending one in
a single host transfer; nothing here synchronises with the host on the other steps.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

import torch


def gradient_conflict(task_grads: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-task gradient norms and pairwise cosines of G [K, P] (row k = task k's gradient).

    Returns float64 tensors on G's device: (norms [K], cosine [K, K], fraction of the K(K-1)/2 pairs
    with cosine < 0 (0-dim), mean cosine over those pairs (0-dim); both NaN when K = 1). One pass
    over G: the Gram matrix G G^T in G's dtype (one [K, P] x [P, K] product, no float64 copy of G),
    the norms from its diagonal, the rest on [K, K] in float64; a zero row has cosine 0 with every
    row, itself included; a non-finite row (a skipped step) makes its cosines, the fraction and the
    mean NaN."""
    rows = task_grads.detach()
    num_tasks = rows.shape[0]
    gram = (rows @ rows.T).to(torch.float64)
    norms = gram.diagonal().clamp_min(0.0).sqrt()
    scale = torch.outer(norms, norms)
    cosine = torch.where(scale == 0, 0.0, gram / scale).clamp(-1.0, 1.0)  # NaN stays NaN
    first, second = torch.triu_indices(num_tasks, num_tasks, offset=1, device=rows.device)  # index tensors: no host sync
    pairs = cosine[first, second]
    fraction = torch.where(pairs.isnan().any(), float("nan"), (pairs < 0).to(torch.float64).mean())
    return norms, cosine, fraction, pairs.mean()


@dataclass(frozen=True)
class ConflictMeasurement:
    """One measurement, read back on the host: `step` (as logged), `grad_norm` [K], `cosine` [K][K]."""

    step: int
    grad_norm: list[float]
    cosine: list[list[float]]
    fraction: float
    mean_cosine: float

    def scalars(self, tasks: list[str]) -> dict[str, float]:
        """TensorBoard tags and values: `grad_norm/<task>`, `conflict/fraction`, `conflict/mean_cosine`."""
        values = {f"grad_norm/{task}": norm for task, norm in zip(tasks, self.grad_norm)}
        return {**values, "conflict/fraction": self.fraction, "conflict/mean_cosine": self.mean_cosine}

    def record(self, tasks: list[str]) -> dict[str, Any]:
        """The keys this measurement adds to its metrics.jsonl record (`conflict.step`: the step measured)."""
        return {
            "grad_norm": dict(zip(tasks, self.grad_norm)),
            "conflict": {"step": self.step, "fraction": self.fraction, "mean_cosine": self.mean_cosine},
            "gradient_cosine": self.cosine,
        }


class GradientConflictMonitor:
    """Measures gradient conflict every `every` steps; keeps the results on the device until `take`.

    Args:
        num_tasks: K.
        every: steps between measurements (> 0); step s is measured when s % every == 0.
        max_pending: measurements kept unread (the oldest are dropped beyond it, e.g. when a
            benchmark steps the trainer without its logging hook).
    """

    def __init__(self, num_tasks: int, every: int, max_pending: int = 1000) -> None:
        if every <= 0:
            raise ValueError(f"every must be positive, got {every}")
        self.num_tasks = num_tasks
        self.every = every
        self._pending: deque[tuple[int, torch.Tensor]] = deque(maxlen=max_pending)

    def due(self, step: int) -> bool:
        """Whether step `step` (1-based, as logged) is measured."""
        return step % self.every == 0

    def observer(self, step: int) -> Callable[[torch.Tensor], None]:
        """The callback for `MultiTaskBackward.backward(observe_task_grads=)` at step `step`."""
        return lambda task_grads: self.record(step, task_grads)

    def record(self, step: int, task_grads: torch.Tensor) -> None:
        """Measure G [K, P] of step `step` on its device; kept as one packed [K + K*K + 2] tensor."""
        norms, cosine, fraction, mean_cosine = gradient_conflict(task_grads)
        self._pending.append((step, torch.cat([norms, cosine.reshape(-1), fraction.reshape(1), mean_cosine.reshape(1)])))

    def take(self) -> list[ConflictMeasurement]:
        """Every measurement since the last call, oldest first (one host transfer; [] when none)."""
        if not self._pending:
            return []
        steps = [step for step, _ in self._pending]
        values = torch.stack([packed for _, packed in self._pending]).cpu().tolist()
        self._pending.clear()
        measurements, k = [], self.num_tasks
        for step, row in zip(steps, values):
            cosine = [row[k + i * k : k + (i + 1) * k] for i in range(k)]
            measurements.append(ConflictMeasurement(step, row[:k], cosine, row[-2], row[-1]))
        return measurements
