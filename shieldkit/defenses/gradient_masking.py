"""A deliberately false defence: input quantisation that hides gradients and adds no robustness.

A teaching and testing aid. It exists so that the evaluation's masking checks
have something to catch, and so that users can see what a broken defence looks
like in a robustness report. Never deploy it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from shieldkit.defense import TransformDefense
from shieldkit.errors import InvalidParameterError
from shieldkit.validation import check_int


class GradientMasking(TransformDefense):
    """Round every pixel to ``levels`` levels: a staircase whose gradient is zero everywhere.

    With the default 256 levels the transform is the identity on 8-bit images
    (clean accuracy is untouched, and the model is exactly as vulnerable as
    without it), yet autograd through the deployed model returns an all-zero
    gradient. Naive gradient attacks (FGSM, PGD, C&W on the deployed model)
    then do nothing and the model *looks* perfectly robust. The symptoms the
    evaluation's masking checks look for all show: zero input gradients, BPDA
    (``attack_view("bpda")``) far stronger than the naive attack, black-box and
    transfer attacks stronger than white-box ones, and no rise of success with
    ``eps``. It declares ``differentiable = False``, honestly.

    Args:
        levels: number of quantisation levels, 2 to 65536 (256: 8-bit).
        **common: ``bounds``, ``seed``.

    Shape:
        ``[B, C, H, W] -> [B, C, H, W]``.

    Reference:
        Athalye, Carlini, Wagner. Obfuscated Gradients Give a False Sense of Security:
        Circumventing Defenses to Adversarial Examples. ICML 2018.
    """

    family = "gradient_masking"
    differentiable = False
    randomized = False
    smoke_params: ClassVar[dict[str, Any]] = {}

    def __init__(self, *, levels: int = 256, **common):
        super().__init__(**common)
        self.levels = check_int(self.name, "levels", levels, minimum=2)
        if levels > 65536:
            raise InvalidParameterError(f"{self.name}: levels must be between 2 and 65536, got levels={levels!r}")

    def _transform(self, x: Tensor) -> Tensor:
        low, high = self.bounds
        steps = self.levels - 1
        return low + (high - low) * (((x - low) / (high - low)) * steps).round() / steps
