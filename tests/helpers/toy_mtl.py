"""Shared scaffolding of the weighting tests: toy multi-task models and the loops that train them.

* `TinyMTL` / `SharedLinear`: small modules whose forward(batch) returns the [K] task losses.
* `ToyProblem`: a seeded `TinyMTL` on one fixed batch, trained through `MultiTaskBackward` by
  `run`, which calls a check on every step's result.
* `module_backward` / `train_module`: lookahead-ready engines for such modules and their loop.
* `small_agent` / `agent_batch` / `train_agent`: rlmtl's agent, wired like the trainer.
* `resumed_copy` / `replay`: a weighting warmed up, its state loaded into a fresh one, both replayed.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn
from torch.func import functional_call

from rlmtl.agents import MultiTaskBC
from rlmtl.config import AgentConfig
from rlmtl.weighting import MultiTaskBackward, Weighting, WeightingResult

Check = Callable[[WeightingResult], None]


class TinyMTL(nn.Module):
    """Shared tanh trunk + K linear heads; forward(batch) -> [K] MSE losses.
    batch = {"x": [K, B, 4], "y": [K, B]}, row k is task k's batch."""

    def __init__(self, num_tasks: int = 3, hidden: int = 6) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(4, hidden), nn.Tanh())
        self.heads = nn.ModuleList(nn.Linear(hidden, 1) for _ in range(num_tasks))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.stack(
            [(head(self.trunk(batch["x"][i])).squeeze(-1) - batch["y"][i]).pow(2).mean() for i, head in enumerate(self.heads)]
        )


class SharedLinear(nn.Module):
    """Only shared parameters: w [4] (float64); task k's loss is mean((x_k w - y_k)^2)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(4, dtype=torch.float64))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return (batch["x"] @ self.w - batch["y"]).pow(2).mean(dim=1)


def module_backward(
    model: nn.Module,
    weighting: Weighting,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    primary_tasks: Sequence[int] | None = None,
    task_parameters: Iterable[nn.Parameter] | None = None,
) -> MultiTaskBackward:
    """The engine for a module with `.trunk` (shared) and `.heads` (default task parameters) whose
    forward(batch) gives the [K] losses, with functional losses for lookahead methods."""
    return MultiTaskBackward(
        weighting,
        model.trunk.parameters(),
        model.heads.parameters() if task_parameters is None else task_parameters,
        optimizer=optimizer,
        named_parameters=dict(model.named_parameters()),
        losses_at=lambda params, batch: functional_call(model, params, (batch,)),
        primary_tasks=primary_tasks,
    )


def train_module(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    engine: MultiTaskBackward,
    batches: Iterable[tuple[Any, Any]],
    check: Check | None = None,
) -> list[torch.Tensor]:
    """One optimizer step per (batch, val_batch) through `engine` on the losses model(batch); the
    losses after the step go to methods that ask for them. `check(result)` runs after every
    backward, before the optimizer step (the model's .grad is the engine's, its parameters those
    the losses were taken at). Returns every step's weights, cloned (some methods update them in place)."""
    weights = []
    for batch, val_batch in batches:
        optimizer.zero_grad(set_to_none=True)
        _, result = engine.backward(model(batch), batch=batch, val_batch=val_batch)
        if check is not None:
            check(result)
        optimizer.step()
        losses_after = None
        if engine.weighting.requirements.post_step_losses:
            with torch.no_grad():
                losses_after = model(batch)
        engine.after_step(losses_after)
        weights.append(result.weights.detach().clone())
    return weights


def assert_finite_weights(result: WeightingResult) -> None:
    """A per-step check: the method's weights are finite."""
    assert torch.isfinite(result.weights).all()


class ToyProblem:
    """A seeded toy multi-task regression: `TinyMTL` (trunk Linear(4, 8) + Tanh, K linear heads)
    on one fixed batch of 16 inputs per task; `target_scale` [K] multiplies task k's targets."""

    def __init__(self, num_tasks: int = 3, *, seed: int = 0, target_scale: Sequence[float] | None = None) -> None:
        torch.manual_seed(seed)
        self.num_tasks = num_tasks
        self.model = TinyMTL(num_tasks, hidden=8)
        self.trunk, self.heads = self.model.trunk, self.model.heads
        inputs, targets = torch.randn(num_tasks, 16, 4), torch.randn(num_tasks, 16)
        if target_scale is not None:
            targets = targets * torch.as_tensor(target_scale, dtype=targets.dtype).view(num_tasks, 1)
        self.batch = {"x": inputs, "y": targets}

    def losses(self) -> torch.Tensor:
        """The [K] task losses at the current parameters (with their graph)."""
        return self.model(self.batch)

    def total_loss(self) -> float:
        return self.losses().sum().item()

    def shared_grad(self) -> torch.Tensor:
        """The trunk's .grad, flattened [P]."""
        return torch.cat([p.grad.reshape(-1) for p in self.trunk.parameters()])

    def grad_of(self, loss: torch.Tensor, retain_graph: bool = False) -> torch.Tensor:
        """d loss / d trunk, flattened [P] (by autograd, leaving .grad alone)."""
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(self.trunk.parameters()), retain_graph=retain_graph)])

    def task_grads(self) -> torch.Tensor:
        """[K, P]: each task's gradient of the trunk at the current parameters."""
        losses = self.losses()
        return torch.stack([self.grad_of(losses[k], retain_graph=True) for k in range(self.num_tasks)])

    def assert_shared_grad_written(self, result: WeightingResult) -> None:
        """The engine wrote the method's shared gradient into the trunk; the heads' gradients are finite."""
        torch.testing.assert_close(self.shared_grad(), result.shared_grad)
        assert all(torch.isfinite(p.grad).all() for p in self.heads.parameters())

    def run(self, weighting: Weighting, steps: int, *, lr: float = 0.05, check: Check | None = None) -> list[torch.Tensor]:
        """`steps` SGD steps through MultiTaskBackward(weighting, trunk, heads) on the fixed batch;
        `check(result)` runs after each backward, before the step (see `train_module`).
        Returns every step's weights."""
        engine = MultiTaskBackward(weighting, self.trunk.parameters(), self.heads.parameters())
        optimizer = torch.optim.SGD(self.model.parameters(), lr=lr)
        return train_module(self.model, optimizer, engine, [(self.batch, None)] * steps, check)


HEAD_ACTION_DIMS = {"keyframe": 8}  # action heads that need another action size than 3


def small_agent(
    num_tasks: int = 4, *, images: bool = False, augment: bool = False, seed: int = 0, head: str = "mse", head_params: dict | None = None
) -> MultiTaskBC:
    """A small rlmtl agent (torch seeded first): a state vector [6], or proprio [4] + a 16x16 camera;
    3-d actions (8-d keyframe poses for the keyframe head)."""
    torch.manual_seed(seed)
    action_dim = HEAD_ACTION_DIMS.get(head, 3)
    options = {"head": head, "head_params": dict(head_params or {})}
    if images:
        shapes = {"proprio": (4,), "rgb_cam": (16, 16, 3)}
        return MultiTaskBC(shapes, action_dim, num_tasks, 16, AgentConfig(hidden_dim=16, image_channels=[8, 8], image_augment=augment, **options))
    return MultiTaskBC({"state": (6,)}, action_dim, num_tasks, 16, AgentConfig(hidden_dim=16, head_hidden_dim=8, **options))


def agent_batch(
    num_tasks: int, *, images: bool = False, generator: torch.Generator | None = None, head: str = "mse", horizon: int = 1
) -> dict[str, Any]:
    """5 samples per task for `small_agent` (actions in [-1, 1]), from `generator` or torch's global
    RNG; `horizon` actions per sample and their "action_valid" for a chunk head, keyframe poses
    (position, a random unit quaternion, gripper 0 or 1) for the keyframe head."""
    if images:
        obs = {
            "proprio": torch.randn(num_tasks, 5, 4, generator=generator),
            "rgb_cam": torch.randint(0, 256, (num_tasks, 5, 16, 16, 3), dtype=torch.uint8, generator=generator),
        }
    else:
        obs = {"state": torch.randn(num_tasks, 5, 6, generator=generator)}
    if head == "keyframe":
        quaternion = torch.nn.functional.normalize(torch.randn(num_tasks, 5, 4, generator=generator), dim=-1)
        gripper = torch.randint(0, 2, (num_tasks, 5, 1), generator=generator).float()
        return {"obs": obs, "actions": torch.cat([torch.rand(num_tasks, 5, 3, generator=generator), quaternion, gripper], dim=-1)}
    if horizon > 1:
        valid = torch.arange(horizon) < torch.randint(1, horizon + 1, (num_tasks, 5, 1), generator=generator)
        return {"obs": obs, "actions": torch.rand(num_tasks, 5, horizon, 3, generator=generator) * 2 - 1, "action_valid": valid}
    return {"obs": obs, "actions": torch.rand(num_tasks, 5, 3, generator=generator) * 2 - 1}


def registered_head_name(agent: MultiTaskBC) -> str:
    """The `agent.head` name of the agent's action head (its class in ACTION_HEADS)."""
    from rlmtl.agents.action_heads import ACTION_HEADS

    return next(name for name in ACTION_HEADS.names() if type(agent.action_head) is ACTION_HEADS.get(name))


def train_agent(
    agent: MultiTaskBC,
    weighting: Weighting,
    steps: int = 3,
    *,
    primary_tasks: list[int] | None = None,
    images: bool = False,
    check: Check | None = None,
) -> None:
    """`steps` AdamW steps of `agent` wired like rlmtl's trainer (`MultiTaskBackward.for_agent`):
    losses only for loss-level methods, a second batch only for methods that ask for one, the
    post-step losses likewise. Batches are seeded by the step. `check(result)` runs after every
    backward; at the end every agent parameter must have moved."""
    k, needs = agent.num_tasks, weighting.requirements
    head, horizon = registered_head_name(agent), agent.action_horizon
    optimizer = torch.optim.AdamW(agent.parameters(), lr=1e-3, weight_decay=1e-4)
    engine = MultiTaskBackward.for_agent(agent, weighting, optimizer, primary_tasks=primary_tasks)
    start = [p.detach().clone() for p in agent.parameters()]
    agent.train()
    for step in range(steps):
        batch = agent_batch(k, images=images, generator=torch.Generator().manual_seed(step), head=head, horizon=horizon)
        val_generator = torch.Generator().manual_seed(100 + step)
        val = agent_batch(k, images=images, generator=val_generator, head=head, horizon=horizon) if needs.val_batch else None
        optimizer.zero_grad(set_to_none=True)
        losses = None if needs.task_grads else agent.task_losses(batch)
        _, result = engine.backward(losses, batch=batch, val_batch=val)
        if check is not None:
            check(result)
        optimizer.step()
        losses_after = None
        if needs.post_step_losses:
            with torch.no_grad():
                losses_after = agent.task_losses(batch)
        engine.after_step(losses_after)
    assert all(not torch.equal(a, p) for a, p in zip(start, agent.parameters()))


# one step for `replay`: (losses [K], context) or (losses [K], context, losses_after [K])
Step = tuple


def replay(methods: Sequence[Weighting], steps: Iterable[Step]) -> list[tuple[WeightingResult, ...]]:
    """Feed every step to each method in turn (combine, then after_step with the step's
    losses_after or None); returns the results per step, one per method."""
    rows = []
    for losses, context, *after in steps:
        row = tuple(method.combine(losses, context) for method in methods)
        for method in methods:
            method.after_step(after[0] if after else None, context)
        rows.append(row)
    return rows


def resumed_copy(make: Callable[[], Weighting], steps: Iterable[Step]) -> tuple[Weighting, Weighting]:
    """(original, resumed): `make()` replayed over `steps`, and a fresh `make()` loaded with its state_dict."""
    original = make()
    replay([original], steps)
    resumed = make()
    resumed.load_state_dict(original.state_dict())
    return original, resumed
