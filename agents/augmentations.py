"""Camera-image augmentations for training, registered by name (`agent.augmentations`), applied in
order when `agent.image_augment` is on. Each maps [N, 3, H, W] floats in [0, 1] to the same shape,
with independent random parameters per image, batched on the images' device; evaluation sees the
images unchanged.

- `shift`: DrQ's random shift (Yarats et al., ICLR 2021): replicate-pad 4 pixels, crop back.
- `crop`: a random square crop of side U(0.9, 1) x H at a random position, resized back to H x W.
  Deviation from robomimic's `CropRandomizer` (a fixed-size crop at training, the centre crop at
  evaluation, robomimic models/obs_core.py:489-500): resizing back keeps the encoder's input size,
  and a side of 1 (the evaluation view) is inside the training range.
- `color`: brightness, contrast and saturation scaled by U(0.7, 1.3) each and the hue rotated by
  U(-0.3, 0.3) of a turn, robomimic's `ColorRandomizer` ranges (obs_core.py:636-639, as torchvision's
  `ColorJitter`); the hue is rotated in YIQ space (a linear approximation of torchvision's HSV shift).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from rlmtl.agents.encoders import random_shift
from rlmtl.registry import Registry

Augmentation = Callable[[torch.Tensor], torch.Tensor]
AUGMENTATIONS: Registry[Augmentation] = Registry("augmentation")
AUGMENTATIONS.register("shift")(random_shift)

CROP_MIN_SIDE = 0.9
COLOR_JITTER = 0.3  # robomimic ColorRandomizer's brightness, contrast, saturation and hue (obs_core.py:636-639)
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, the greyscale of torchvision's saturation and contrast
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _uniform(n: int, low: float, high: float, like: torch.Tensor) -> torch.Tensor:
    return torch.rand(n, 1, 1, 1, device=like.device, dtype=like.dtype) * (high - low) + low


@AUGMENTATIONS.register("crop")
def random_resized_crop(images: torch.Tensor) -> torch.Tensor:
    """Random square crop of side U(CROP_MIN_SIDE, 1) of the image, resized back (see the module docstring)."""
    n = images.shape[0]
    side = _uniform(n, CROP_MIN_SIDE, 1.0, images).reshape(n)
    # the crop's centre in normalised coordinates, anywhere that keeps it inside the image
    centre = (torch.rand(n, 2, device=images.device, dtype=images.dtype) * 2 - 1) * (1 - side)[:, None]
    theta = torch.zeros(n, 2, 3, device=images.device, dtype=images.dtype)
    theta[:, 0, 0] = side
    theta[:, 1, 1] = side
    theta[:, :, 2] = centre
    grid = nn.functional.affine_grid(theta, list(images.shape), align_corners=False)
    return nn.functional.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _grey(images: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor(_LUMA, device=images.device, dtype=images.dtype).reshape(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


@AUGMENTATIONS.register("color")
def color_jitter(images: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast, saturation and hue jitter per image (see the module docstring)."""
    n = images.shape[0]
    low, high = 1 - COLOR_JITTER, 1 + COLOR_JITTER
    x = images * _uniform(n, low, high, images)  # brightness
    mean = _grey(x).mean(dim=(2, 3), keepdim=True)
    x = (x - mean) * _uniform(n, low, high, images) + mean  # contrast
    grey = _grey(x)
    x = (x - grey) * _uniform(n, low, high, images) + grey  # saturation
    angle = (torch.rand(n, device=images.device, dtype=images.dtype) * 2 - 1) * COLOR_JITTER * 2 * math.pi  # hue
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.zeros(n, 3, 3, device=images.device, dtype=images.dtype)
    rotation[:, 0, 0] = 1
    rotation[:, 1, 1], rotation[:, 1, 2], rotation[:, 2, 1], rotation[:, 2, 2] = cos, -sin, sin, cos
    to_yiq = _RGB_TO_YIQ.to(images.device, images.dtype)
    transform = torch.linalg.inv(to_yiq) @ rotation @ to_yiq  # [N, 3, 3] in RGB
    x = torch.einsum("nij,njhw->nihw", transform, x)
    return x.clamp(0.0, 1.0)


def augment(images: torch.Tensor, names: list[str]) -> torch.Tensor:
    """Apply the augmentations `names` in order to [N, 3, H, W] images in [0, 1]."""
    for name in names:
        images = AUGMENTATIONS.get(name)(images)
    return images
