"""The feature-squeezing detector (Xu et al. 2018): how far squeezing moves the model's prediction."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shieldkit.core.defense import DetectorDefense
from shieldkit.core.errors import InvalidParameterError
from shieldkit.defenses.bit_depth import BitDepth
from shieldkit.defenses.median_smoothing import MedianSmoothing

BATCH = 500  # images per forward pass when scoring


class FeatureSqueezing(DetectorDefense):
    """Score = max over squeezers of ``|| softmax(f(x)) - softmax(f(squeeze(x))) ||_1``.

    A clean input's prediction barely moves when its colour depth is reduced or
    it is median-filtered; an adversarial one, tuned to the exact pixel values,
    often moves a lot. ``fit(model, x_clean, fpr)`` puts the threshold at the
    ``1 - fpr`` quantile of the clean scores. The defaults are Xu et al.'s
    joint MNIST detector: 1-bit depth and a 2x2 median filter (for CIFAR-10
    they use 5 bits, 2x2 median and non-local means).

    Args:
        bits: bit depth of the bit-depth squeezer, 1 to 16; ``None`` leaves it out.
        window: window of the median squeezer, 1 to 15; ``None`` leaves it out.
        **common: ``bounds``, ``seed``.

    Reference:
        Xu, Evans, Qi. Feature Squeezing: Detecting Adversarial Examples in Deep
        Neural Networks. NDSS 2018.
    """

    family = "feature_squeezing"

    def __init__(self, *, bits: int | None = 1, window: int | None = 2, **common):
        super().__init__(**common)
        if bits is None and window is None:
            raise InvalidParameterError(f"{self.name}: give at least one squeezer (bits or window), got neither")
        self.bits = bits
        self.window = window
        self.squeezers = []
        try:
            if bits is not None:
                self.squeezers.append(BitDepth(bits=bits, bounds=self.bounds))
            if window is not None:
                self.squeezers.append(MedianSmoothing(window=window, bounds=self.bounds))
        except InvalidParameterError as error:
            raise InvalidParameterError(f"{self.name}: {error}") from None

    def _score(self, model: nn.Module, x: Tensor) -> Tensor:
        return torch.cat([self._score_batch(model, part) for part in x.split(BATCH)])

    def _score_batch(self, model: nn.Module, x: Tensor) -> Tensor:
        reference = F.softmax(model(x), dim=1)
        distances = [
            (reference - F.softmax(model(squeezer.transform(x)), dim=1)).abs().sum(dim=1)
            for squeezer in self.squeezers
        ]
        return torch.stack(distances).amax(dim=0)
