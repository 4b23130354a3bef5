"""Pretrained camera-encoder weights from a file the user provides (`agent.pretrained_image_encoder`).

Nothing can be downloaded here, so rlmtl never fetches weights: the file is a `torch.save`d state
dict (a plain {name: tensor} mapping, or one under "state_dict"), loaded with `weights_only=True`
after its zip entries' declared sizes are checked against the file. Names are the encoder's own
(`resnet18` follows torchvision's, so torchvision's `resnet18` weights load): BatchNorm running
statistics and a classifier (`fc.*`) are skipped; every other entry must exist in the encoder with
the same shape, and at least one must. The weights go into every camera's encoder before training;
a checkpoint then holds them like any other weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from rlmtl.errors import CheckpointError, ConfigError

KEY = "agent.pretrained_image_encoder"
SKIPPED_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


def read_pretrained(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of tensors in `path` (read once, `weights_only`, declared sizes checked first);
    ConfigError naming the key and the file otherwise."""
    from rlmtl.training.checkpoint import check_declared_sizes

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"'{KEY}': {path}: no such file")
    try:
        check_declared_sizes(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError as error:
        raise ConfigError(f"'{KEY}': {error}") from None
    except Exception as error:  # not a torch file, or pickled objects weights_only refuses
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"'{KEY}': {path}: cannot load weights ({message})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"'{KEY}': {path}: not a state dict of tensors")
    return state


def pretrained_weights(state: dict[str, torch.Tensor], path: str | Path, encoder: nn.Module) -> dict[str, torch.Tensor]:
    """The entries of `state` (read from `path`) that `encoder` takes; ConfigError naming the key,
    the file and the first bad entry (unknown name, wrong shape, not finite) otherwise."""
    own = encoder.state_dict()
    taken = {}
    for name, value in state.items():
        if name.endswith(SKIPPED_SUFFIXES) or name.startswith("fc."):
            continue
        if name not in own:
            raise ConfigError(f"'{KEY}': {path}: {name!r} is not a weight of the {type(encoder).__name__}")
        if tuple(value.shape) != tuple(own[name].shape):
            raise ConfigError(f"'{KEY}': {path}: {name!r} has shape {tuple(value.shape)}, the encoder's is {tuple(own[name].shape)}")
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise ConfigError(f"'{KEY}': {path}: {name!r} holds NaN or inf")
        taken[name] = value
    if not taken:
        raise ConfigError(f"'{KEY}': {path}: holds none of the {type(encoder).__name__}'s weights")
    return taken


def load_pretrained_image_encoders(encoders: nn.ModuleDict, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Copy the weights `state` (read from `path` by `read_pretrained`) into each camera's encoder
    (the rest keep their initialisation)."""
    for encoder in encoders.values():
        encoder.load_state_dict(pretrained_weights(state, path, encoder), strict=False)
