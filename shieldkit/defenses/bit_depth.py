"""Bit-depth reduction (Xu et al. 2018): each pixel rounded to one of ``2**bits`` levels."""

from __future__ import annotations

from torch import Tensor

from shieldkit.core.defense import TransformDefense
from shieldkit.core.validation import check_int_between


class BitDepth(TransformDefense):
    """Quantise every pixel to ``bits`` bits: ``round(x * (2**bits - 1)) / (2**bits - 1)`` (in ``bounds``).

    Rounding has a zero gradient almost everywhere, so the defence is not
    differentiable: an adaptive attacker uses BPDA (``attack_view("bpda")``,
    the identity backward), which Athalye et al. 2018 show breaks it. 1 bit is
    Xu et al.'s MNIST squeezer; it removes FGSM perturbations smaller than the
    0.5 threshold, against an attacker who ignores it.

    Args:
        bits: bits per pixel, 1 to 16.
        **common: ``bounds``, ``seed``.

    Shape:
        ``[B, C, H, W] -> [B, C, H, W]``.

    Reference:
        Xu, Evans, Qi. Feature Squeezing: Detecting Adversarial Examples in Deep
        Neural Networks. NDSS 2018.
    """

    family = "bit_depth"
    differentiable = False
    randomized = False

    def __init__(self, *, bits: int = 4, **common):
        super().__init__(**common)
        self.bits = check_int_between(self.name, "bits", bits, 1, 16)
        self.levels = 2**self.bits - 1

    def _transform(self, x: Tensor) -> Tensor:
        return quantize(x, self.bounds, self.levels)


def quantize(x: Tensor, bounds: tuple[float, float], steps: int) -> Tensor:
    """Round every pixel to the nearest of ``steps + 1`` evenly spaced levels from ``low`` to ``high``."""
    low, high = bounds
    unit = (x - low) / (high - low)
    return low + (high - low) * (unit * steps).round() / steps
