"""Reconstruction-error detector: flag inputs far from a generator's range (Defense-GAN, section 3.3)."""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn

from shieldkit.core.defense import DetectorDefense
from shieldkit.gan.defense_gan import SMOKE_PARAMS, ProjectionSettings

__all__ = ["ReconstructionError"]


class ReconstructionError(ProjectionSettings, DetectorDefense):
    """Score each input by its projection error ``min_z ||G(z) - x||^2 / D``; high error = adversarial.

    Adversarial perturbations push images off the generator's manifold, so their
    best reconstruction is worse than a clean image's. ``fit(model, x_clean, fpr)``
    sets the threshold at the ``1 - fpr`` quantile of clean scores. The classifier
    is not used: the score depends on the image and the generator only.

    Args:
        generator, steps, restarts, lr, momentum, decay_at, decay, init_std, batch_size:
            the projection, exactly as in ``defense_gan`` (Defense-GAN's defaults).
        seed: every call draws the starting latents from a fresh RNG seeded with
            ``seed``, so a batch always gets the same scores (``None``: torch's global
            RNG, and scores vary a little from call to call).
        **common: ``bounds``.

    Reference:
        Samangouei, Kabkab, Chellappa. Defense-GAN. ICLR 2018 (section 3.3, "attack detection").
    """

    family = "reconstruction_error"
    randomized = False
    smoke_params: ClassVar[dict[str, Any]] = SMOKE_PARAMS

    # Seeded by default (other defences are not): a batch always gets the same scores.
    def __init__(self, *, seed: int | None = 0, **projection_and_common):
        super().__init__(seed=seed, **projection_and_common)

    def _score(self, model: nn.Module, x: Tensor) -> Tensor:
        self.reseed(self.seed)  # a fresh RNG per call: the same batch always gets the same scores
        return self.project(x).error
