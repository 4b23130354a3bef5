"""The diffusion head (agents/diffusion_head.py) against an independent float64 formulation of its
papers' equations: the cosine schedule (Nichol & Dhariwal 2021), DDPM's forward noising (Ho et al.
2020, eq. 4), DDIM's deterministic update (Song et al. 2021, eq. 12 with sigma = 0), and a tiny
agent that learns per-task actions through the whole path (training noise -> DDIM sampling)."""

from __future__ import annotations

import math

import numpy as np
import torch

from rlmtl.agents.action_heads import make_action_head
from rlmtl.agents.bc import MultiTaskBC
from rlmtl.config import AgentConfig


def numpy_alpha_bars(steps: int) -> np.ndarray:
    f = [math.cos((t / steps + 0.008) / 1.008 * math.pi / 2) ** 2 for t in range(steps + 1)]
    betas = [min(1 - f[t + 1] / f[t], 0.999) for t in range(steps)]
    return np.cumprod([1 - b for b in betas])


def step_embeddings(steps: np.ndarray) -> torch.Tensor:
    """[N] diffusion steps -> [N, 32] (float64): sin and cos at 16 frequencies 10000^(-i/15)."""
    angles = steps[:, None] * np.exp(-math.log(10000.0) * np.arange(16) / 15)
    return torch.as_tensor(np.concatenate([np.sin(angles), np.cos(angles)], axis=1))


def test_the_noise_schedule_is_the_capped_cosine_schedule():
    head = make_action_head("diffusion", {}, 3)
    np.testing.assert_allclose(head.alpha_bars(torch.device("cpu")).numpy(), numpy_alpha_bars(100), rtol=1e-6)
    assert [t for t, _ in head.sampling] == [90, 80, 70, 60, 50, 40, 30, 20, 10, 0]


def test_training_noises_the_normalised_action_and_regresses_the_noise():
    head = make_action_head("diffusion", {"train_steps": 50}, 2)
    actions = torch.tensor([[3.0, -1.0], [0.0, 2.0], [1.0, 1.0]])
    center, scale = torch.tensor([[1.0, 0.0]]).expand(3, 2), torch.tensor([[2.0, 4.0]]).expand(3, 2)
    torch.manual_seed(3)
    extras = head.training_inputs(actions, None, center, scale)
    torch.manual_seed(3)  # the same draws, in the head's order: steps, then noise
    steps, noise = torch.randint(0, 50, (3,)), torch.randn(3, 2)
    torch.testing.assert_close(extras["noise"], noise)
    alpha_bar = torch.as_tensor(numpy_alpha_bars(50)[steps.numpy()], dtype=torch.float32)[:, None]
    x0 = ((actions - center) / scale).clamp(-1, 1)
    torch.testing.assert_close(extras["noisy"], alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * noise)
    torch.testing.assert_close(extras["step"], step_embeddings(steps.numpy()).float())
    raw = torch.randn(3, 2)
    torch.testing.assert_close(head.loss(raw, actions, None, center, scale, extras), (raw - noise) ** 2)


def test_sampling_is_ddims_deterministic_update_from_zero():
    head = make_action_head("diffusion", {"train_steps": 100, "inference_steps": 5, "horizon": 2}, 3)
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(4, 6, generator=generator, dtype=torch.float64)
    weights = torch.randn(6 + 6 + 32, 6, generator=generator, dtype=torch.float64) * 0.3

    def denoiser(inputs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(inputs @ weights)

    center, scale = torch.full((4, 3), 0.5, dtype=torch.float64), torch.full((4, 3), 2.0, dtype=torch.float64)
    sampled = head.decode(lambda rest: denoiser(torch.cat([features, rest], -1)), center, scale)

    alpha_bars = numpy_alpha_bars(100)
    x = np.zeros((4, 6))
    for t in (80, 60, 40, 20, 0):
        step = step_embeddings(np.full(4, t))
        eps = denoiser(torch.cat([features, torch.as_tensor(x), step], -1)).numpy()
        previous = alpha_bars[t - 20] if t >= 20 else 1.0
        x0 = np.clip((x - math.sqrt(1 - alpha_bars[t]) * eps) / math.sqrt(alpha_bars[t]), -1, 1)
        x = math.sqrt(previous) * x0 + math.sqrt(1 - previous) * eps
    assert sampled.shape == (4, 2, 3)
    np.testing.assert_allclose(sampled.numpy(), x.reshape(4, 2, 3) * 2.0 + 0.5, atol=1e-5)


def test_a_small_diffusion_agent_learns_each_tasks_action():
    """Two tasks with one action each: after training, DDIM sampling returns each task's action."""
    torch.manual_seed(0)
    options = AgentConfig(hidden_dim=16, head_hidden_dim=64, head="diffusion", head_params={"train_steps": 50, "inference_steps": 10})
    agent = MultiTaskBC({"state": (6,)}, 3, 2, 16, options)
    targets = torch.tensor([[0.5, -0.3, 0.2], [-0.4, 0.6, 0.0]])
    optimizer = torch.optim.Adam(agent.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(800):
        batch = {"obs": {"state": torch.randn(2, 32, 6, generator=generator)}, "actions": targets[:, None].expand(2, 32, 3)}
        optimizer.zero_grad()
        agent.task_losses(batch).sum().backward()
        optimizer.step()
    agent.eval()
    task_ids = torch.tensor([0, 1, 0, 1])
    actions = agent.act_batch({"state": torch.randn(4, 6, generator=generator)}, task_ids)
    torch.testing.assert_close(actions, targets[task_ids], atol=0.1, rtol=0)
