"""Build the pieces of a run from its config: device, agent, checkpoint metadata."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from rlmtl.agents.base import AGENTS, MultiTaskAgent
from rlmtl.config import RunConfig, config_from_dict, config_to_dict
from rlmtl.config_plugins import check_agent_name
from rlmtl.envs import EnvSettings, Suite
from rlmtl.errors import CheckpointError, ConfigError
from rlmtl.provenance import provenance
from rlmtl.training.checkpoint import CheckpointMeta, CheckpointPayload


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


def agent_meta(config: RunConfig, tasks: list[str], obs_spec: dict[str, Any], action_dim: int) -> CheckpointMeta:
    """Everything needed to rebuild the agent and its environments from a checkpoint alone."""
    return {
        "config": config_to_dict(config),
        "tasks": list(tasks),
        "obs_shapes": {key: list(obs_spec[key]["shape"]) for key in config.agent.obs_keys},
        "action_dim": int(action_dim),
        "provenance": provenance(),
    }


def check_head_fits_suite(config: RunConfig, suite: Suite) -> None:
    """The action head must suit the suite's actions: a head that requires an action kind (keyframe:
    RLBench's keyframe poses) needs a suite of that kind, and a chunk may not be longer than an
    episode. ConfigError naming the key otherwise (before any data is collected)."""
    from rlmtl.agents.action_heads import ACTION_HEADS

    head = ACTION_HEADS.get(config.agent.head)
    kind = suite.action_kind(config.env.options)
    if head.requires_action_kind is not None and head.requires_action_kind != kind:
        raise ConfigError(
            f"'agent.head': {config.agent.head} predicts {head.requires_action_kind} actions, but {config.env.backend} "
            f"suite {config.env.suite} takes {kind} actions"
        )
    horizon = config.agent.head_params.get("horizon")
    limit = config.env.max_episode_steps or suite.episode_limit(config.env.options)
    if horizon is not None and horizon > limit:
        raise ConfigError(f"'agent.head_params.horizon': a chunk of {horizon} actions is longer than an episode of {config.env.suite} ({limit} steps)")


def check_pretrained_image_encoder(config: RunConfig) -> dict[str, torch.Tensor] | None:
    """`agent.pretrained_image_encoder`, when set, must load into the configured image encoder
    (agents/pretrained.py): ConfigError naming the key, the file and the bad entry, before any data
    is collected. Returns the file's weights as read (None when the key is not set), so the
    trainer loads what it checked without reading the file again."""
    if not config.agent.pretrained_image_encoder:
        return None
    from rlmtl.agents.encoders import ENCODERS
    from rlmtl.agents.pretrained import pretrained_weights, read_pretrained

    agent = config.agent
    encoder = ENCODERS.get(agent.image_encoder)(config.env.image_size, list(agent.image_channels), agent.hidden_dim)
    state = read_pretrained(agent.pretrained_image_encoder)
    pretrained_weights(state, agent.pretrained_image_encoder, encoder)
    return state


def build_agent(meta: CheckpointMeta) -> MultiTaskAgent:
    """A fresh agent (`agent.name` from the registry) shaped as `meta` describes (normalisation
    still at defaults); ConfigError naming `agent.name` when no agent has that name."""
    config = config_from_dict(meta["config"], "checkpoint config")
    check_agent_name(config.agent.name, "checkpoint config")  # a checkpoint's config is not validated on load
    factory = AGENTS.get(config.agent.name)
    shapes = {key: tuple(shape) for key, shape in meta["obs_shapes"].items()}
    return factory(shapes, meta["action_dim"], len(meta["tasks"]), config.env.image_size, config.agent)


def evaluation_weights(payload: CheckpointPayload) -> dict[str, torch.Tensor]:
    """The agent state a checkpoint is evaluated with: its weights' moving average where the run kept
    one (train.ema_decay > 0, rlmtl/training/ema.py), else its weights."""
    average = payload.get("ema")
    if not average:
        return payload["model"]
    from rlmtl.training.ema import averaged_weights

    replaced = averaged_weights(average)
    unknown = [name for name in replaced if name not in payload["model"]]
    if unknown:
        raise CheckpointError(f"checkpoint's moving average has weights the agent does not ({unknown[0]})")
    return {**payload["model"], **replaced}


def agent_from_checkpoint(payload: CheckpointPayload, device: torch.device | str = "cpu") -> MultiTaskAgent:
    """Rebuild the agent of a loaded checkpoint, weights and normalisation included; CheckpointError
    when they do not fit its config or hold a NaN or inf (parameters and buffers alike)."""
    agent = build_agent(payload["meta"])
    weights = evaluation_weights(payload)
    try:
        agent.load_state_dict(weights)
    except RuntimeError as error:
        raise CheckpointError(f"checkpoint weights do not match its config ({str(error).splitlines()[0]})") from None
    nonfinite = [name for name, value in weights.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if nonfinite:  # a diverged run: its actions would be NaN
        more = f" and {len(nonfinite) - 3} more" if len(nonfinite) > 3 else ""
        raise CheckpointError(f"checkpoint weights are not finite (NaN or inf in {', '.join(nonfinite[:3])}{more})")
    return agent.to(device).eval()


def env_settings(config: RunConfig, task: str, **changes) -> EnvSettings:
    """The EnvSettings of `task` under `config` (observations and backend options as configured)."""
    settings = EnvSettings(
        backend=config.env.backend,
        suite=config.env.suite,
        task=task,
        cameras=tuple(config.env.cameras),
        image_size=config.env.image_size,
        max_episode_steps=config.env.max_episode_steps,
        options=config.env.options,
    )
    return replace(settings, **changes)
