"""A small Adam kept in buffers, for methods with their own learnable weights (FAMO's logits,
Auto-Lambda's lambda, ...). State is part of the owning module's `state_dict`, on its device,
and a step never leaves the device."""

from __future__ import annotations

import torch
from torch import nn


class BufferAdam(nn.Module):
    """Adam (Kingma & Ba) on one tensor; `weight_decay` is L2 added to the gradient, as
    `torch.optim.Adam` does (FAMO's official code uses that optimizer)."""

    def __init__(
        self,
        shape: torch.Size | tuple[int, ...],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__()
        self.lr, self.betas, self.eps, self.weight_decay = lr, tuple(betas), eps, weight_decay
        self.register_buffer("exp_avg", torch.zeros(shape))
        self.register_buffer("exp_avg_sq", torch.zeros(shape))
        self.register_buffer("steps", torch.zeros(()))

    @torch.no_grad()
    def step(self, value: torch.Tensor, grad: torch.Tensor) -> None:
        """Update `value` in place from `grad`."""
        beta1, beta2 = self.betas
        if self.weight_decay:
            grad = grad + self.weight_decay * value
        self.steps += 1
        self.exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias1 = 1 - beta1**self.steps
        bias2 = 1 - beta2**self.steps
        denominator = (self.exp_avg_sq / bias2).sqrt_().add_(self.eps)
        value.sub_(self.lr * (self.exp_avg / bias1) / denominator)
