"""Layers that keep pixel space and model space apart."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from shieldkit.core.errors import InvalidInputError, InvalidParameterError


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` as the first layer of a model.

    Attacks in shieldkit always work in pixel space inside ``bounds``; putting the
    normalisation inside the model is what keeps clipping and normalisation apart.

    Args:
        mean: one value per channel (or a single value for all channels).
        std: one positive value per channel (or a single value).

    Shape:
        ``[B, C, H, W] -> [B, C, H, W]``
    """

    def __init__(self, mean: Sequence[float] | float, std: Sequence[float] | float):
        super().__init__()
        mean_t = _per_channel("mean", mean)
        std_t = _per_channel("std", std)
        if (std_t <= 0).any():
            raise InvalidParameterError(f"Normalize: std must be positive, got std={std!r}")
        if mean_t.numel() != std_t.numel() and 1 not in (mean_t.numel(), std_t.numel()):
            raise InvalidParameterError(
                f"Normalize: mean has {mean_t.numel()} values and std {std_t.numel()}; give one per channel "
                "(or a single value for all)"
            )
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1))
        self.register_buffer("std", std_t.view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise InvalidInputError(f"Normalize: x must be images [B, C, H, W], got shape {tuple(x.shape)}")
        channels = max(self.mean.shape[1], self.std.shape[1])
        if channels != 1 and x.shape[1] != channels:
            raise InvalidInputError(
                f"Normalize: x has {x.shape[1]} channels but mean/std have {channels} (shape {tuple(x.shape)})"
            )
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def _per_channel(name: str, values: Sequence[float] | float) -> torch.Tensor:
    """``values`` as a flat float32 tensor of finite numbers, or a one-line error naming ``name``."""
    flat = [values] if isinstance(values, (int, float)) else values
    try:
        numbers = [float(v) for v in (flat.flatten().tolist() if isinstance(flat, torch.Tensor) else flat)]
    except (TypeError, ValueError):
        raise InvalidParameterError(f"Normalize: {name} must be a number or one number per channel, "
                                    f"got {name}={values!r}") from None
    if not numbers:
        raise InvalidParameterError(f"Normalize: {name} is empty; give one value per channel, got {name}={values!r}")
    if not all(math.isfinite(v) for v in numbers):
        raise InvalidParameterError(f"Normalize: {name} must be finite, got {name}={values!r}")
    return torch.tensor(numbers, dtype=torch.float32)
