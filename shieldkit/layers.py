"""Layers that keep pixel space and model space apart."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


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
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if mean_t.numel() == 0 or std_t.numel() == 0:
            raise ValueError("Normalize: mean and std must not be empty")
        if not torch.isfinite(mean_t).all() or not torch.isfinite(std_t).all():
            raise ValueError(f"Normalize: mean and std must be finite, got mean={mean!r}, std={std!r}")
        if (std_t <= 0).any():
            raise ValueError(f"Normalize: std must be positive, got std={std!r}")
        if mean_t.numel() != std_t.numel() and 1 not in (mean_t.numel(), std_t.numel()):
            raise ValueError(
                f"Normalize: mean has {mean_t.numel()} values and std {std_t.numel()}; give one per channel"
            )
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1))
        self.register_buffer("std", std_t.view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"Normalize: expected images [B, C, H, W], got shape {tuple(x.shape)}")
        channels = self.mean.shape[1]
        if channels != 1 and x.shape[1] != channels:
            raise ValueError(f"Normalize: input has {x.shape[1]} channels, mean/std have {channels}")
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"
