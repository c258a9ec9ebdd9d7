"""Gaussian noise augmentation at inference: a fresh draw of noise on every call."""

from __future__ import annotations

import torch
from torch import Tensor

from shieldkit.core.defense import TransformDefense
from shieldkit.core.errors import InvalidParameterError
from shieldkit.core.validation import check_number


class GaussianNoise(TransformDefense):
    """Add ``N(0, sigma^2)`` noise to every pixel (``sigma`` relative to the bounds' width), then clip.

    Randomised: an adaptive attacker averages over draws (EOT,
    ``attack_view(gradient="exact", eot=N)``). The noise is additive, so the
    exact gradient of one draw is the model's gradient at the noisy point.
    Randomised smoothing (Cohen et al. 2019) builds a certified classifier on
    the same transform, with a majority vote over many draws.

    Args:
        sigma: noise standard deviation as a fraction of ``high - low``, ``> 0`` and ``<= 1``.
        **common: ``bounds``, ``seed`` (the defence's own RNG, so the attacker's is not disturbed).

    Shape:
        ``[B, C, H, W] -> [B, C, H, W]``.

    Reference:
        Zantedeschi, Nicolae, Rawat. Efficient Defenses Against Adversarial Attacks. AISec 2017.
    """

    family = "gaussian_noise"
    differentiable = True
    randomized = True

    def __init__(self, *, sigma: float = 0.1, **common):
        super().__init__(**common)
        self.sigma = check_number(self.name, "sigma", sigma, 0.0, 1.0)
        if self.sigma == 0:
            raise InvalidParameterError(f"{self.name}: sigma must be > 0 (0 is no defence), got sigma={sigma!r}")

    def _transform(self, x: Tensor) -> Tensor:
        low, high = self.bounds
        noise = torch.randn(x.shape, generator=self.rng(x.device), device=x.device, dtype=x.dtype)
        return x + (self.sigma * (high - low)) * noise
