"""Observation encoders, registered by name (`agent.lowdim_encoder`, `agent.image_encoder`).

A vector encoder maps [N, D] float inputs to [N, F]; an image encoder maps [N, 3, H, W] floats in
[0, 1] to [N, F]. `ObservationEncoder` fuses one vector encoder (over every vector key, plus the
one-hot task id when task conditioning is on) with one image encoder per camera.
"""

from __future__ import annotations

import torch
from torch import nn

from rlmtl.registry import Registry

ENCODERS: Registry[type[nn.Module]] = Registry("encoder")


def mlp(in_dim: int, hidden_dim: int, num_layers: int, out_dim: int | None = None) -> nn.Sequential:
    """ReLU MLP with `num_layers` hidden layers (and an optional linear output layer)."""
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(num_layers):
        layers += [nn.Linear(width, hidden_dim), nn.ReLU()]
        width = hidden_dim
    if out_dim is not None:
        layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


@ENCODERS.register("mlp")
class MLPEncoder(nn.Module):
    """Vector observations -> features: `num_layers` ReLU layers of width `hidden_dim`."""

    def __init__(self, in_dim: int, hidden_dim: int = 256, num_layers: int = 2) -> None:
        super().__init__()
        self.net = mlp(in_dim, hidden_dim, max(1, num_layers))
        self.out_dim = hidden_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm written with reshapes and reductions, so it runs under `torch.func.vmap`
    with gradients (the fused kernel's backward does not); same parameters and results."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        grouped = x.reshape(n, self.num_groups, -1)
        mean = grouped.mean(dim=-1, keepdim=True)
        var = grouped.var(dim=-1, unbiased=False, keepdim=True)
        normalised = ((grouped - mean) / torch.sqrt(var + self.eps)).reshape(x.shape)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return normalised * self.weight.reshape(shape) + self.bias.reshape(shape)


NORM_GROUPS = 8  # GroupNorm groups of every conv layer: channels must be a multiple of it


@ENCODERS.register("cnn")
class ConvEncoder(nn.Module):
    """A small CNN for one camera: stride-2 3x3 convs with GroupNorm, then a linear projection.

    Input [N, 3, H, W] in [0, 1]; output [N, out_dim].
    """

    def __init__(self, image_size: int, channels: list[int] | tuple[int, ...] = (32, 64, 64), out_dim: int = 256) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        size = image_size
        for out_channels in channels:
            layers += [nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1), GroupNorm(NORM_GROUPS, out_channels), nn.ReLU()]
            in_channels = out_channels
            size = (size + 1) // 2
        self.conv = nn.Sequential(*layers)
        self.project = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * size * size, out_dim), nn.LayerNorm(out_dim), nn.ReLU())
        self.out_dim = out_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.project(self.conv(images - 0.5))


def random_shift(images: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """DrQ-style augmentation: replicate-pad by `pad` pixels and crop back at a random offset per image."""
    n, _, h, w = images.shape
    padded = nn.functional.pad(images, (pad, pad, pad, pad), mode="replicate")
    eps = 1.0 / (h + 2 * pad)
    base_y = torch.linspace(-1.0 + eps, 1.0 - eps, h + 2 * pad, device=images.device)[:h]
    base_x = torch.linspace(-1.0 + eps, 1.0 - eps, w + 2 * pad, device=images.device)[:w]
    grid = torch.stack(torch.meshgrid(base_x, base_y, indexing="xy"), dim=-1)  # [h, w, 2] as (x, y)
    shift = torch.randint(0, 2 * pad + 1, (n, 1, 1, 2), device=images.device).to(images.dtype) * (2.0 / (h + 2 * pad))
    return nn.functional.grid_sample(padded, grid.unsqueeze(0) + shift, padding_mode="zeros", align_corners=False)


class ObservationEncoder(nn.Module):
    """Fuses vector and image observations into one feature vector per sample.

    `vector_dim` is the width of the concatenated vector keys (0 when none); `cameras` lists the
    image keys, each with an encoder of its own or (`share_image_encoder`) one for all. Output: [N, out_dim].
    """

    def __init__(
        self,
        vector_dim: int,
        cameras: list[str],
        image_size: int,
        num_tasks: int,
        task_conditioning: bool,
        lowdim_encoder: str = "mlp",
        image_encoder: str = "cnn",
        hidden_dim: int = 256,
        num_layers: int = 2,
        image_channels: list[int] | tuple[int, ...] = (32, 64, 64),
        share_image_encoder: bool = False,
    ) -> None:
        super().__init__()
        self.num_tasks = num_tasks
        self.task_conditioning = task_conditioning
        self.cameras = list(cameras)
        self.share_image_encoder = share_image_encoder and len(self.cameras) > 1
        names = ["shared"] if self.share_image_encoder else self.cameras
        self.image_encoders = nn.ModuleDict({name: ENCODERS.get(image_encoder)(image_size, list(image_channels), hidden_dim) for name in names})
        vector_in = vector_dim + (num_tasks if task_conditioning else 0)
        self.vector_encoder = ENCODERS.get(lowdim_encoder)(vector_in, hidden_dim, num_layers) if vector_in else None
        widths = [self._camera_encoder(camera).out_dim for camera in self.cameras]
        if self.vector_encoder is not None:
            widths.append(self.vector_encoder.out_dim)
        self.fuse = nn.Sequential(nn.Linear(sum(widths), hidden_dim), nn.ReLU()) if len(widths) > 1 else nn.Identity()
        self.out_dim = hidden_dim if len(widths) > 1 else widths[0]

    def _camera_encoder(self, camera: str) -> nn.Module:
        return self.image_encoders["shared" if self.share_image_encoder else camera]

    def forward(self, vector: torch.Tensor | None, images: dict[str, torch.Tensor], task_onehot: torch.Tensor) -> torch.Tensor:
        """vector [N, D] (normalised) or None, images {camera: [N, 3, H, W] in [0, 1]},
        task_onehot [N, K] (used when task conditioning is on) -> features [N, F]."""
        features = [self._camera_encoder(camera)(images[camera]) for camera in self.cameras]
        if self.vector_encoder is not None:
            parts = [] if vector is None else [vector]
            if self.task_conditioning:
                parts.append(task_onehot)
            features.append(self.vector_encoder(torch.cat(parts, dim=-1)))
        return self.fuse(torch.cat(features, dim=-1)) if len(features) > 1 else features[0]
