"""DB-MTL: Dual-Balancing Multi-Task Learning.

Lin, Jiang, Ye, Zhang, Chen, Chen, Liu, Tsang, Kwok, "Dual-Balancing for Multi-Task Learning",
arXiv 2308.12029 (Neural Networks, 2025).

Loss-scale balancing: each task's loss is replaced by log(L_i + 1e-8), whose shared-parameter
gradient is g_i / (L_i + 1e-8) (g_i = context.task_grads[i]; no extra backward is needed).
Gradient-magnitude balancing, with an EMA of those gradients (step k = 1, 2, ...):

    buf_i <- h_i + (beta / k^sigma) (buf_i - h_i),      h_i = g_i / (L_i + 1e-8)
    u_i = ||buf_i||,  alpha_i = max_j u_j / (u_i + 1e-8)
    shared gradient = sum_i alpha_i buf_i          (every alpha_i buf_i has the largest norm)

Defaults beta = 0.9, sigma = 0 (LibMTL's `DB_beta`, `DB_beta_sigma`).

Choices and differences from LibMTL's `DB_MTL` (the authors' code):
* First step: buf = h (the EMA starts at the first gradient). LibMTL starts the buffer at zeros,
  so its first buffer is (1 - beta) h and the first shared gradient is 10x smaller at beta 0.9;
  `zero_init=True` reproduces that.
* Heads: the engine gives task-specific parameters sum_i weights_i grad L_i. The returned
  weights_i = alpha_i / (L_i + 1e-8), so each head gets its log-loss gradient scaled by the same
  alpha_i as its shared gradient (`scale_heads=True`, the default we chose). LibMTL backpropagates
  each log-loss unscaled, so its heads get weights 1 / (L_i + 1e-8); `scale_heads=False` does that.
  These weights are also what is logged as the method's effective weights.
* The log needs L_i > 0 (h_i flips sign otherwise). A device-side flag `invalid_seen` [K] records
  non-positive or NaN losses without a sync; `check()` raises a ValueError naming the task.
* The [K, P] buffer is persistent state (it is in every checkpoint). It is registered as a [K, 0]
  placeholder and replaced on the first step, once P is known; `load_state_dict` resizes the
  placeholder to the saved shape.
"""

from __future__ import annotations

from typing import Any

import torch

from rlmtl.weighting.base import Requirements, StepContext, Weighting, WeightingResult, register_weighting

EPSILON = 1e-8


@register_weighting("db_mtl")
class DBMTL(Weighting):
    """DB-MTL gradient balancing of log-losses.

    Args:
        num_tasks: K.
        beta: EMA coefficient of the gradient buffer (0.9).
        sigma: the EMA coefficient at step k is beta / k^sigma (0: constant).
        zero_init: start the buffer at zeros as LibMTL does (default False: at the first gradient).
        scale_heads: heads get alpha_i-scaled log-loss gradients (True) or unscaled ones (False, LibMTL).

    State: `grad_buffer` [K, P] (a [K, 0] placeholder before the first step), `invalid_seen` [K] bool.
    """

    requirements = Requirements(task_grads=True)

    def __init__(self, num_tasks: int, beta: float = 0.9, sigma: float = 0.0, zero_init: bool = False, scale_heads: bool = True) -> None:
        super().__init__(num_tasks)
        self.beta, self.sigma, self.zero_init, self.scale_heads = beta, sigma, zero_init, scale_heads
        self.register_buffer("grad_buffer", torch.zeros(num_tasks, 0))
        self.register_buffer("invalid_seen", torch.zeros(num_tasks, dtype=torch.bool))

    def check(self) -> None:
        """Raise ValueError if any task's loss was ever <= 0 (or NaN). Syncs with the host."""
        if bool(self.invalid_seen.any()):
            task = int(self.invalid_seen.nonzero()[0, 0])
            raise ValueError(f"DB-MTL: loss of task {task} is not positive, so log(L) is undefined; DB-MTL needs losses > 0")

    def combine(self, losses: torch.Tensor, context: StepContext) -> WeightingResult:
        """losses [K], context.task_grads [K, P] -> shared_grad [P] and head weights [K]."""
        task_grads = context.task_grads
        if task_grads is None:
            raise ValueError("DB-MTL needs context.task_grads (requirements.task_grads)")
        losses = losses.detach().to(task_grads.dtype)
        with torch.no_grad():
            self.invalid_seen.logical_or_(~(losses > 0))
            denominators = losses + EPSILON
            log_grads = task_grads / denominators[:, None]  # [K, P], gradients of log(L_i + eps)
            if self.grad_buffer.shape[1] == 0:
                self.grad_buffer = torch.zeros_like(log_grads)
                decay = self.beta if self.zero_init else 0.0
            else:
                if self.grad_buffer.shape != log_grads.shape:
                    raise ValueError(
                        f"DB-MTL: task gradients have shape {tuple(log_grads.shape)}, the buffer {tuple(self.grad_buffer.shape)}"
                    )
                decay = self.beta / float(context.step + 1) ** self.sigma
            self.grad_buffer.lerp_(log_grads, 1.0 - decay)  # = h + decay * (buf - h)
            norms = self.grad_buffer.norm(dim=1)
            alpha = norms.max() / (norms + EPSILON)
            shared_grad = alpha @ self.grad_buffer
            weights = (alpha if self.scale_heads else torch.ones_like(alpha)) / denominators
        return WeightingResult(weights=weights, shared_grad=shared_grad)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        """Let a saved [K, P] buffer replace the [K, 0] placeholder (and the other way round)."""
        saved = state_dict.get(prefix + "grad_buffer")
        current = self.grad_buffer
        if (
            saved is not None
            and saved.shape != current.shape
            and saved.shape[0] == current.shape[0]
            and 0 in (saved.shape[1], current.shape[1])
        ):
            self.grad_buffer = torch.zeros(saved.shape, dtype=current.dtype, device=current.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
