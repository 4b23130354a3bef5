"""The `diffusion` action head: a per-task denoiser trained as a DDPM and sampled with DDIM.

Diffusion Policy (Chi et al., RSS 2023) as robomimic configures it (robomimic/config/
diffusion_policy_config.py:62-79, d309eae): 100 training steps, the `squaredcos_cap_v2` noise
schedule (the cosine schedule of Nichol & Dhariwal, ICML 2021: alpha_bar(s) = cos^2((s + 0.008) /
1.008 * pi/2), each beta capped at 0.999), epsilon prediction, samples clipped to [-1, 1]; DDIM
sampling (Song et al., ICLR 2021) with 10 steps, eta 0, the final step to alpha_bar = 1
(`set_alpha_to_one`) and evenly spaced steps from 0 (`steps_offset` 0: 90, 80, ..., 0 for 10 of 100).

Training (per sample, in the task's normalised action space, x0 = the demo action or chunk):
t ~ U{0..T-1}, eps ~ N(0, I), x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps; the task head
sees [encoder features, x_t, sinusoidal embedding of t] and predicts eps; the loss is the squared
error. The noise and steps are drawn once per batch outside `vmap` (`training_inputs`), from torch's
RNG on the model's device, which the checkpoint saves, so every weighting method sees the same
draw for the direct and the per-task paths and a resumed run draws what it would have drawn.

Deviations, each for this agent's shape (one shared encoder, one small MLP head per task):
- the denoiser is the task's MLP head (`agent.head_hidden_dim` > 0), not a 1-D conditional U-Net,
  and the diffusion step enters as a sinusoidal embedding of `time_embedding_dim` (32) concatenated
  with the features (Diffusion Policy: 256 dims through an MLP, then FiLM);
- sampling starts from x_T = 0, the prior's mean, not a draw from N(0, I): with eta 0 the sample is
  then a function of the observation alone, so an episode's actions depend on its scene seed, as
  for the other heads (the GMM head's mode choice is the same kind of choice);
- `horizon` actions per sample (default 1; Diffusion Policy predicts 16 and executes 8 open-loop):
  horizons above 1 are executed with ACT's temporal ensemble like the `chunk` head, and padded steps
  past a demo's end (the demo's last action repeated) are trained like the others, as Diffusion
  Policy's sequence sampler pads and trains them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from rlmtl.agents.action_heads import ACTION_HEADS, ActionHead, HeadParamError, normalise_actions


def cosine_alpha_bars(train_steps: int) -> torch.Tensor:
    """alpha_bar_t for t = 0..T-1 [T] (float64) of the `squaredcos_cap_v2` schedule: beta_t =
    min(1 - f((t+1)/T) / f(t/T), 0.999) with f(s) = cos^2((s + 0.008) / 1.008 * pi/2), cumulated."""
    s = torch.arange(train_steps + 1, dtype=torch.float64) / train_steps
    f = torch.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, dim=0)


def ddim_timesteps(train_steps: int, inference_steps: int) -> list[tuple[int, int]]:
    """The (t, previous t) pairs of DDIM sampling, from the noisiest: t = (S-1-i) * (T // S) for
    i = 0..S-1, previous t = t - T // S (-1 and below: alpha_bar = 1)."""
    ratio = train_steps // inference_steps
    steps = [i * ratio for i in reversed(range(inference_steps))]
    return [(t, t - ratio) for t in steps]


def sinusoidal_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """timesteps [...] -> [..., dim]: sin and cos of t at `dim / 2` frequencies 10000^(-i/(dim/2 - 1))
    (the transformer's position embedding, which Diffusion Policy uses for the diffusion step)."""
    half = dim // 2
    frequencies = torch.exp(torch.arange(half, device=timesteps.device, dtype=torch.float32) * (-math.log(10000.0) / (half - 1)))
    angles = timesteps.to(torch.float32).unsqueeze(-1) * frequencies
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


@dataclass(frozen=True)
class DiffusionParams:
    """`train_steps` T and `inference_steps` S: robomimic's DDIM settings (100 and 10); `horizon`:
    actions per sample (1); `ensemble_decay`: k of the temporal ensemble when `horizon` > 1 (ACT's
    0.01); `time_embedding_dim`: width of the diffusion step's sinusoidal embedding (32)."""

    train_steps: int = 100
    inference_steps: int = 10
    horizon: int = 1
    ensemble_decay: float = 0.01
    time_embedding_dim: int = 32

    def check(self) -> None:
        if not (isinstance(self.train_steps, int) and 2 <= self.train_steps <= 10_000):
            raise HeadParamError("train_steps", f"must be a whole number in [2, 10000], got {self.train_steps!r}")
        if not (isinstance(self.inference_steps, int) and 1 <= self.inference_steps <= self.train_steps):
            raise HeadParamError("inference_steps", f"must be a whole number in [1, train_steps = {self.train_steps}], got {self.inference_steps!r}")
        if not (isinstance(self.horizon, int) and 1 <= self.horizon <= 1000):
            raise HeadParamError("horizon", f"must be a whole number in [1, 1000], got {self.horizon!r}")
        if not (math.isfinite(self.ensemble_decay) and self.ensemble_decay >= 0):
            raise HeadParamError("ensemble_decay", f"must be >= 0 and finite, got {self.ensemble_decay!r}")
        if not (isinstance(self.time_embedding_dim, int) and 4 <= self.time_embedding_dim <= 1024 and self.time_embedding_dim % 2 == 0):
            raise HeadParamError("time_embedding_dim", f"must be an even whole number in [4, 1024], got {self.time_embedding_dim!r}")


@ACTION_HEADS.register("diffusion")
class DiffusionHead(ActionHead):
    """Predicts the noise of a noised action (or chunk of `horizon` actions); see the module docstring."""

    Params = DiffusionParams
    requires_hidden_layer = True  # a linear head cannot denoise: agent.head_hidden_dim must be > 0

    def __init__(self, params: DiffusionParams, action_dim: int) -> None:
        self.action_dim, self.horizon = action_dim, params.horizon
        self.ensemble_decay, self.embedding_dim = params.ensemble_decay, params.time_embedding_dim
        self.train_steps = params.train_steps
        self.sampling = ddim_timesteps(params.train_steps, params.inference_steps)
        self._alpha_bars64 = cosine_alpha_bars(params.train_steps)
        self._alpha_bars: dict[torch.device, torch.Tensor] = {}  # float32 copies per device
        self._sampling_embeddings: dict[torch.device, torch.Tensor] = {}  # [S, E] per device
        # each sampling step's DDIM coefficients as Python floats (no per-step tensor arithmetic):
        # x0 = (x - sqrt(1 - a_t) eps) / sqrt(a_t), clipped; x <- sqrt(a_prev) x0 + sqrt(1 - a_prev) eps
        alpha = self._alpha_bars64.tolist()
        self._coefficients = [
            (math.sqrt(1 - alpha[t]), 1 / math.sqrt(alpha[t]), math.sqrt(a), math.sqrt(1 - a))
            for t, previous in self.sampling
            for a in [alpha[previous] if previous >= 0 else 1.0]
        ]

    def _width(self) -> int:
        return self.horizon * self.action_dim

    def output_dim(self, action_dim: int) -> int:
        return self._width()

    def condition_dim(self, action_dim: int) -> int:
        return self._width() + self.embedding_dim

    def alpha_bars(self, device: torch.device) -> torch.Tensor:
        """alpha_bar_t [T] in float32 on `device` (made once per device, not per step)."""
        if device not in self._alpha_bars:
            self._alpha_bars[device] = self._alpha_bars64.to(device=device, dtype=torch.float32)
        return self._alpha_bars[device]

    def training_inputs(self, actions, valid, center, scale):
        """Draws t [*lead] and eps [*lead, H*A]; returns the noised actions and the step's embedding
        (the denoiser's inputs) and eps (its target)."""
        if self.horizon > 1:
            center, scale = center.unsqueeze(-2), scale.unsqueeze(-2)
        x0 = normalise_actions(actions, center, scale).flatten(-2 if self.horizon > 1 else -1)
        lead = x0.shape[:-1]
        timesteps = torch.randint(0, self.train_steps, lead, device=x0.device)
        noise = torch.randn_like(x0)
        alpha_bar = self.alpha_bars(x0.device)[timesteps].unsqueeze(-1)
        noisy = alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise
        return {"noisy": noisy, "step": sinusoidal_embedding(timesteps, self.embedding_dim), "noise": noise}

    def head_input(self, features, extras):
        return torch.cat([features, extras["noisy"], extras["step"]], dim=-1)

    def loss(self, raw, actions, valid, center, scale, extras=None):
        return (raw - extras["noise"]).pow(2)

    def actions(self, raw, center, scale):
        raise TypeError("the diffusion head's actions come from `decode` (DDIM sampling), not from one head output")

    def decode(self, run_head: Callable[[torch.Tensor | None], torch.Tensor], center, scale):
        """DDIM with eta 0 from x_T = 0: `inference_steps` calls of the denoiser `run_head`."""
        device, rows = center.device, center.shape[:-1]
        if device not in self._sampling_embeddings:
            steps = torch.tensor([t for t, _ in self.sampling], device=device)
            self._sampling_embeddings[device] = sinusoidal_embedding(steps, self.embedding_dim)
        embeddings = self._sampling_embeddings[device].to(center.dtype)
        x = center.new_zeros(*rows, self._width())
        for step, (noise_part, inverse_signal, keep, renoise) in enumerate(self._coefficients):
            noise = run_head(torch.cat([x, embeddings[step].expand(*rows, -1)], dim=-1))
            x0 = ((x - noise_part * noise) * inverse_signal).clamp(-1.0, 1.0)
            x = keep * x0 + renoise * noise
        if self.horizon > 1:
            return x.unflatten(-1, (self.horizon, self.action_dim)) * scale.unsqueeze(-2) + center.unsqueeze(-2)
        return x * scale + center
