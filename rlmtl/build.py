"""Build the pieces of a run from its config: device, agent, checkpoint metadata."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from agents.bc import MultiTaskBC
from envs import EnvSettings
from rlmtl.config import RunConfig, config_from_dict, config_to_dict
from rlmtl.errors import CheckpointError, ConfigError


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when available; anything else is passed to torch.device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device: {name!r} is not a torch device") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} requested but CUDA is not available")
    return device


def agent_meta(config: RunConfig, tasks: list[str], obs_spec: dict[str, Any], action_dim: int) -> dict[str, Any]:
    """Everything needed to rebuild the agent and its environments from a checkpoint alone."""
    return {
        "config": config_to_dict(config),
        "tasks": list(tasks),
        "obs_shapes": {key: list(obs_spec[key]["shape"]) for key in config.agent.obs_keys},
        "action_dim": int(action_dim),
    }


def build_agent(meta: dict[str, Any]) -> MultiTaskBC:
    """A fresh agent shaped as `meta` describes (normalisation still at defaults)."""
    config = config_from_dict(meta["config"], "checkpoint config")
    shapes = {key: tuple(shape) for key, shape in meta["obs_shapes"].items()}
    return MultiTaskBC(shapes, meta["action_dim"], len(meta["tasks"]), config.env.image_size, config.agent)


def agent_from_checkpoint(payload: dict[str, Any], device: torch.device | str = "cpu") -> MultiTaskBC:
    """Rebuild the agent of a loaded checkpoint, weights and normalisation included."""
    agent = build_agent(payload["meta"])
    try:
        agent.load_state_dict(payload["model"])
    except RuntimeError as error:
        raise CheckpointError(f"checkpoint weights do not match its config ({str(error).splitlines()[0]})") from None
    return agent.to(device).eval()


def env_settings(config: RunConfig, task: str, **changes) -> EnvSettings:
    """The EnvSettings of `task` under `config` (observations as configured)."""
    settings = EnvSettings(
        backend=config.env.backend,
        suite=config.env.suite,
        task=task,
        cameras=tuple(config.env.cameras),
        image_size=config.env.image_size,
        max_episode_steps=config.env.max_episode_steps,
    )
    if config.env.backend == "rlbench":
        options = {"action_mode": config.env.action_mode, "variation": config.env.variation, "render_mode": config.env.render_mode}
        settings = replace(settings, extra=tuple(sorted(options.items())))
    return replace(settings, **changes)


def agent_backward(agent: MultiTaskBC, weighting: Any, optimizer: torch.optim.Optimizer, primary_tasks: list[int] | None = None) -> Any:
    """The `MultiTaskBackward` that drives `weighting` for rlmtl's agent: batched per-task
    gradients (one vmapped backward), functional losses for lookahead methods, the optimizer."""
    from rlmtl.weighting import MultiTaskBackward
    from rlmtl.weighting.engine import flatten_task_grads

    num_tasks = agent.num_tasks

    def per_task_gradients(batch: Any) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        losses, grads = agent.per_task_gradients(batch)
        return losses, flatten_task_grads(list(grads["encoder"].values()), num_tasks), [*grads["heads"][0], *grads["heads"][1]]

    return MultiTaskBackward(
        weighting,
        agent.shared_parameters(),
        agent.task_specific_parameters(),
        optimizer=optimizer,
        named_parameters=dict(agent.named_parameters()),
        losses_at=lambda params, batch: torch.func.functional_call(agent, params, (batch,)),
        primary_tasks=primary_tasks or [],
        per_task_gradients=per_task_gradients,
    )
