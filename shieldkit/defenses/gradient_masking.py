"""A deliberately false defence: input quantisation that hides gradients and adds no robustness.

A teaching and testing aid. It exists so that the evaluation's masking checks
have something to catch, and so that users can see what a broken defence looks
like in a robustness report. Never deploy it.
"""

from __future__ import annotations

from torch import Tensor

from shieldkit.core.defense import TransformDefense
from shieldkit.core.validation import check_int_between
from shieldkit.defenses.bit_depth import quantize


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

    def __init__(self, *, levels: int = 256, **common):
        super().__init__(**common)
        self.levels = check_int_between(self.name, "levels", levels, 2, 65536)

    def _transform(self, x: Tensor) -> Tensor:
        return quantize(x, self.bounds, self.levels - 1)
