"""Camera encoders beyond the small CNN: spatial-softmax keypoints and a ResNet-18 trunk with GroupNorm.

Each is registered in `ENCODERS` (`agent.image_encoder`) with the constructor the agent calls,
`(image_size, channels, out_dim)`, maps [N, 3, H, W] images in [0, 1] to [N, out_dim], and runs
under `torch.func.vmap` with gradients (GroupNorm written out, agents/encoders.py).

- `cnn_spatial`: the small CNN's conv stack (`agent.image_channels`, the last layer at stride 1)
  pooled by spatial softmax into 2-d keypoints, then a linear layer: the pooling robomimic uses for
  manipulation (its `VisualCore` = backbone + `SpatialSoftmax` + linear; robomimic
  models/base_nets.py:1113-1123, d309eae: 32 keypoints, temperature 1, fixed).
- `resnet18`: ResNet-18 (He et al., CVPR 2016: BasicBlocks [2, 2, 2, 2] of 64, 128, 256 and 512
  channels) with GroupNorm instead of BatchNorm (as Diffusion Policy's `replace_bn_with_gn`), its
  last feature map pooled by spatial softmax, then a linear layer. Its module names follow
  torchvision's `resnet18` (`conv1`, `bn1`, `layer1.0.conv1`, ...), so torchvision weights the user
  provides load by name (`agent.pretrained_image_encoder`; BatchNorm's running statistics are
  skipped, its affine weights become GroupNorm's). `agent.image_channels` does not apply to it.
"""

from __future__ import annotations

import torch
from torch import nn

from rlmtl.agents.encoders import ENCODERS, NORM_GROUPS, GroupNorm

SPATIAL_KEYPOINTS = 32  # robomimic's SpatialSoftmax num_kp default (base_nets.py:1123)
RESNET_WIDTHS = (64, 128, 256, 512)
RESNET_GROUPS = 16  # GroupNorm groups in the ResNet (64 channels / 16 = 4 per group, as Diffusion Policy's features // 16)


class SpatialSoftmax(nn.Module):
    """[N, C, H, W] -> [N, 2 * keypoints]: a 1x1 conv to `keypoints` maps, a softmax over each map's
    H x W positions, and the expected (x, y) of each, in [-1, 1] (Finn et al., ICRA 2016)."""

    def __init__(self, in_channels: int, height: int, width: int, keypoints: int = SPATIAL_KEYPOINTS, temperature: float = 1.0) -> None:
        super().__init__()
        self.keypoints_conv = nn.Conv2d(in_channels, keypoints, kernel_size=1)
        self.temperature = temperature
        ys, xs = torch.meshgrid(torch.linspace(-1.0, 1.0, height), torch.linspace(-1.0, 1.0, width), indexing="ij")
        self.register_buffer("positions", torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1), persistent=False)  # [H*W, 2]
        self.out_dim = 2 * keypoints

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        maps = self.keypoints_conv(features)
        n, k = maps.shape[:2]
        attention = torch.softmax(maps.reshape(n, k, -1) / self.temperature, dim=-1)  # [N, K, H*W]
        return (attention @ self.positions).reshape(n, 2 * k)


def _feature_size(size: int, stride: int) -> int:
    """Output side of a 3x3 conv with padding 1 at `stride` (also the 3x3 max pool with padding 1)."""
    return (size - 1) // stride + 1


@ENCODERS.register("cnn_spatial")
class SpatialConvEncoder(nn.Module):
    """3x3 convs with GroupNorm (stride 2, the last stride 1 to keep a map worth pooling), spatial
    softmax keypoints, then a linear projection with LayerNorm. [N, 3, H, W] in [0, 1] -> [N, out_dim]."""

    def __init__(self, image_size: int, channels: list[int] | tuple[int, ...] = (32, 64, 64), out_dim: int = 256) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels, size = 3, image_size
        for index, out_channels in enumerate(channels):
            stride = 1 if index == len(channels) - 1 else 2
            layers += [nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1), GroupNorm(NORM_GROUPS, out_channels), nn.ReLU()]
            in_channels, size = out_channels, _feature_size(size, stride)
        self.conv = nn.Sequential(*layers)
        self.pool = SpatialSoftmax(in_channels, size, size)
        self.project = nn.Sequential(nn.Linear(self.pool.out_dim, out_dim), nn.LayerNorm(out_dim), nn.ReLU())
        self.out_dim = out_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.project(self.pool(self.conv(images - 0.5)))


class BasicBlock(nn.Module):
    """ResNet's two 3x3 convs with a residual connection (a 1x1 conv when the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = GroupNorm(RESNET_GROUPS, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = GroupNorm(RESNET_GROUPS, out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), GroupNorm(RESNET_GROUPS, out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.downsample is None else self.downsample(x)))


@ENCODERS.register("resnet18")
class ResNet18Encoder(nn.Module):
    """ResNet-18 with GroupNorm, spatial softmax over its last map, a linear projection with
    LayerNorm. [N, 3, H, W] in [0, 1] (normalised with ImageNet's mean and std, the statistics of
    torchvision's weights) -> [N, out_dim]."""

    def __init__(self, image_size: int, channels: list[int] | tuple[int, ...] = (), out_dim: int = 256) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, RESNET_WIDTHS[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = GroupNorm(RESNET_GROUPS, RESNET_WIDTHS[0])
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        size = _feature_size(_feature_size(image_size, 2), 2)
        in_channels = RESNET_WIDTHS[0]
        for index, width in enumerate(RESNET_WIDTHS):
            stride = 1 if index == 0 else 2
            self.add_module(f"layer{index + 1}", nn.Sequential(BasicBlock(in_channels, width, stride), BasicBlock(width, width, 1)))
            in_channels, size = width, _feature_size(size, stride)
        self.pool = SpatialSoftmax(in_channels, size, size)
        self.project = nn.Sequential(nn.Linear(self.pool.out_dim, out_dim), nn.LayerNorm(out_dim), nn.ReLU())
        self.out_dim = out_dim
        # ImageNet statistics (torchvision's `ResNet18_Weights.IMAGENET1K_V1` transforms)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(torch.relu(self.bn1(self.conv1((images - self.mean) / self.std))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.project(self.pool(x))
