"""Dynamic Weight Average (DWA), iteration-level.

Liu, Johns, Davison, "End-to-End Multi-Task Learning with Attention", CVPR 2019, arXiv 1803.10704.

The paper's rule is epoch-level: w_i(t) = K exp(r_i(t-1)/T) / sum_j exp(r_j(t-1)/T) with
r_i(t-1) = L_i(t-1) / L_i(t-2) (mean training losses of the two previous epochs), T = 2.
rlmtl trains by steps, so this follows the iteration-level variant of nash-mtl / FAMO's
`DynamicWeightAverage`: the last 2 x `window` loss vectors are kept, and

    r_i = mean(L_i over the last `window` steps) / mean(L_i over the `window` steps before those)
    w   = K softmax(r / T)

Choices and differences from nash-mtl's code:
* Warm-up: w = 1 until the buffer holds 2 x window real loss vectors, i.e. from the step whose
  `context.step` (steps taken before it) is 2 x window - 1, counting the current losses. nash-mtl
  switches earlier (after `window` + 1 iterations) with its buffer pre-filled with ones, so its
  first ratios mix real losses with that padding.
* Sum convention: the engine backpropagates sum_i w_i L_i with w summing to K, as LibMTL's and
  Auto-Lambda's DWA (and rlmtl's `uniform`, which DWA equals during warm-up); nash-mtl's
  iteration-level code takes the mean (w_i / K), a constant factor 1/K.
* The ring buffer position and warm-up come from `context.step` (a host int), so no step ever
  syncs; resuming therefore needs the engine's step counter restored (rlmtl's trainer does).
* Like every DWA implementation, the ratios assume positive losses; no guard is added.
"""

from __future__ import annotations

import torch

from rlmtl.weighting.base import StepContext, Weighting, WeightingResult, register_weighting


@register_weighting("dwa")
class DWA(Weighting):
    """Iteration-level DWA.

    Args:
        num_tasks: K.
        window: steps averaged per window (nash-mtl: 25); 2 x window loss vectors are kept.
        temperature: T (paper: 2.0).

    State: `history` [2 * window, K], a ring buffer of detached float32 losses; slot
    `step % (2 * window)` holds the losses of step `step`.
    """

    def __init__(self, num_tasks: int, window: int = 25, temperature: float = 2.0) -> None:
        super().__init__(num_tasks)
        if window < 1:
            raise ValueError(f"DWA: window must be >= 1, got {window}")
        self.window = window
        self.temperature = temperature
        self.register_buffer("history", torch.zeros(2 * window, num_tasks))
        self.register_buffer("ones", torch.ones(num_tasks), persistent=False)

    def combine(self, losses: torch.Tensor, context: StepContext) -> WeightingResult:
        """losses [K] -> weights [K] (1 during warm-up, then K softmax(r / T))."""
        capacity = 2 * self.window
        step = context.step
        with torch.no_grad():
            self.history[step % capacity] = losses.detach().float()
        if step + 1 < capacity:
            weights = self.ones
        else:
            # Oldest first: after rolling, row capacity - 1 is this step's losses.
            ordered = self.history.roll(-(step + 1) % capacity, dims=0)
            ratios = ordered[self.window :].mean(0) / ordered[: self.window].mean(0)
            weights = self.num_tasks * torch.softmax(ratios / self.temperature, dim=0)
        return WeightingResult(weights=weights, loss=(weights * losses).sum())
