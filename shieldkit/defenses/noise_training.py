"""Gaussian noise augmentation training: the base model randomised smoothing serves well (Cohen et al. 2019)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shieldkit.core.validation import check_number
from shieldkit.defenses.training import LoopTrainer, train


class NoiseTraining(LoopTrainer):
    """Train on ``x + N(0, sigma^2 I)`` (not clipped): the classifier ``randomized_smoothing`` smooths.

    The smoothed classifier is only as accurate as the base model is under its
    noise; a model trained without noise votes almost at random at ``sigma=0.25``.
    Train with the ``sigma`` the smoothing will use.

    Args:
        sigma: noise standard deviation in pixel units (``> 0``).
        **common: ``bounds``, ``seed``.

    ``fit(model, train_data, *, epochs=1, batch_size=128, lr=1e-3, checkpoint_dir=None,
    resume=False, quiet=True, seed=0, device=None)`` trains a copy of ``model`` with
    Adam and returns it in eval mode.

    Reference:
        Cohen, Rosenfeld, Kolter. Certified Adversarial Robustness via Randomized Smoothing. ICML 2019.
    """

    family = "noise_training"
    smoke_params: ClassVar[dict[str, Any]] = {"sigma": 0.25}

    def __init__(self, *, sigma: float = 0.25, **common):
        super().__init__(**common)
        self.sigma = check_number(self.name, "sigma", sigma, 0.0, strict=True)

    def _train(self, model: nn.Module, x: Tensor, y: Tensor, options: dict) -> nn.Module:
        def step(net: nn.Module, xb: Tensor, yb: Tensor) -> Tensor:
            return F.cross_entropy(net(xb + self.sigma * torch.randn_like(xb)), yb)

        return train(self.name, model, x, y, step, config=self.get_params(), **options)
