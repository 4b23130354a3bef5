"""GradNorm: Chen, Badrinarayanan, Lee, Rabinovich, "GradNorm: Gradient Normalization for Adaptive
Loss Balancing in Deep Multitask Networks", ICML 2018, arXiv 1711.02257.

Rule, each step (w = learnable task weights, initialised to 1, summing to K):
    G_i = |w_i g_i|,  Gbar = mean_i G_i,
    r_i = (L_i / L_i(0)) / mean_j (L_j / L_j(0))    (L_i(0): the losses at the first step),
    L_grad = sum_i |G_i - Gbar r_i^alpha|           (the target Gbar r_i^alpha held constant),
the step's weights are the current w (loss-level: the engine applies them to the shared
gradients, w @ G, and to the heads), then w takes one Adam step on dL_grad/dw and is renormalised
to sum to K. The gradient is in closed form: dL_grad/dw_i = sign(G_i - target_i) |g_i|.

Choices:
* g_i is each task's gradient of ALL shared parameters (the [K, P] matrix the engine provides,
  as LibMTL does); the paper uses the last shared layer's weights only.
* w is updated directly, as in the paper, by its own Adam (`lr` 0.025, the `--method-params-lr`
  default of the FAMO NYUv2 trainer for methods' own parameters; the paper tunes it per problem). LibMTL
  parametrises w = K softmax(s) and trains s with the model optimizer, from the second epoch.
  Here GradNorm is active from the first step.
* after the Adam step w is clamped at 0 before the renormalisation (the paper does not say; a
  negative weight would turn a task's descent into ascent, and at w_i = 0 the gradient
  -|g_i| still pushes it back up).
* L_i(0) is recorded on the device at the first call (a flag buffer, no host sync). r_i assumes
  positive losses, as the paper's loss ratios do; a negative ratio is clamped to 0 before the
  power alpha instead of producing NaN.
"""

from __future__ import annotations

import torch

from rlmtl.weighting.adam import BufferAdam
from rlmtl.weighting.base import Requirements, StepContext, Weighting, WeightingResult, register_weighting


@register_weighting("gradnorm")
class GradNorm(Weighting):
    """Weights that equalise the tasks' weighted gradient norms, scaled by their training rates.

    Args:
        num_tasks: K.
        alpha: strength of the training-rate term r_i^alpha (paper: 1.5).
        lr: learning rate of the Adam that updates the weights w.
    """

    requirements = Requirements(task_grads=True)

    def __init__(self, num_tasks: int, alpha: float = 1.5, lr: float = 0.025) -> None:
        super().__init__(num_tasks)
        self.alpha = alpha
        self.register_buffer("task_weights", torch.ones(num_tasks))
        self.register_buffer("initial_losses", torch.ones(num_tasks))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.optimizer = BufferAdam((num_tasks,), lr=lr)

    def combine(self, losses: torch.Tensor, context: StepContext) -> WeightingResult:
        grads = context.task_grads  # [K, P]
        losses = losses.detach().to(self.task_weights.dtype)
        weights = self.task_weights.clone()  # this step's weights, before the update
        initial = torch.where(self.initialized, self.initial_losses, losses)
        self.initial_losses.copy_(initial)
        self.initialized.fill_(True)

        grad_norms = grads.detach().norm(dim=1).to(weights.dtype)  # |g_i| [K]
        weighted_norms = weights * grad_norms  # G_i (w > 0)
        ratios = losses / initial
        relative_rates = (ratios / ratios.mean()).clamp_min(0.0)
        target = weighted_norms.mean() * relative_rates.pow(self.alpha)
        self.optimizer.step(self.task_weights, torch.sign(weighted_norms - target) * grad_norms)
        self.task_weights.clamp_(min=0.0)
        self.task_weights.mul_(self.num_tasks / self.task_weights.sum().clamp_min(torch.finfo(weights.dtype).tiny))
        return WeightingResult(weights=weights.to(grads.dtype))
