"""Gaussian blur: a differentiable input transform defence."""

import math

import torch
import torch.nn.functional as F
from torch import Tensor

import shieldkit as sk
from shieldkit.core.validation import check_number


class GaussianBlur(sk.TransformDefense):
    """Blur each channel with a Gaussian kernel of standard deviation ``sigma`` pixels.

    A linear filter, so exact gradients pass through it (``differentiable = True``):
    it is a teaching example of a defence an adaptive attacker differentiates directly.
    """

    family = "gaussian_blur"
    differentiable = True
    randomized = False

    def __init__(self, *, sigma: float = 1.0, **common):
        super().__init__(**common)
        self.sigma = check_number(self.name, "sigma", sigma, 0.0, 10.0, strict=True)
        radius = max(1, math.ceil(3 * self.sigma))
        offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-(offsets**2) / (2 * self.sigma**2))
        self._kernel = kernel / kernel.sum()

    def _transform(self, x: Tensor) -> Tensor:
        channels = x.shape[1]
        kernel = self._kernel.to(device=x.device, dtype=x.dtype)
        radius = kernel.numel() // 2
        horizontal = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
        vertical = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
        padded = F.pad(x, (radius, radius, 0, 0), mode="replicate")
        x = F.conv2d(padded, horizontal, groups=channels)
        padded = F.pad(x, (0, 0, radius, radius), mode="replicate")
        return F.conv2d(padded, vertical, groups=channels)
