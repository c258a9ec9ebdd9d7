"""The negative-image ("semantic") attack of Hosseini et al. 2017."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from shieldkit.core.attack import Attack
from shieldkit.core.losses import fooled
from shieldkit.core.validation import check_choice

VARIANTS = ("negative", "centred")


def negative_image(x: Tensor, bounds: tuple[float, float], variant: str = "negative") -> Tensor:
    """The negative of each image: same shapes and edges, every brightness reversed.

    ``"negative"`` reflects every pixel about the middle of the bounds,
    ``low + high - x``, which is its own inverse. ``"centred"`` reflects about each
    image's own per-channel mean, ``2 * mean - x`` clipped to the bounds: for data
    centred at zero this is plain negation ``-x``, the form the paper states.

    Shape:
        ``[B, C, H, W] -> [B, C, H, W]``.
    """
    low, high = bounds
    if variant == "negative":
        return (low + high) - x
    mean = x.mean(dim=(2, 3), keepdim=True)
    return (2 * mean - x).clamp(low, high)


class Semantic(Attack):
    """Replaces each image by its negative: a large but meaning-preserving change.

    Unbounded (``eps`` is ``None`` unless given, then the result is projected onto
    the epsilon-ball) and untargeted. It queries the model once, for the labels of
    the negatives, reported as ``info["fooled"]``.

    Args:
        variant: ``"negative"`` (``low + high - x``) or ``"centred"`` (``2 * mean - x``
            per image and channel, clipped to the bounds).
        **common: ``eps`` (optional), ``norm`` (``"linf"`` or ``"l2"``, used for
            ``eps``), ``bounds``, ``seed``.

    Reference:
        Hosseini, Xiao, Jaiswal, Poovendran. On the Limitation of Convolutional
        Neural Networks in Recognizing Negative Images. ICMLA 2017.
    """

    family = "semantic"
    norms = ("linf", "l2")
    bounded = False
    targeted = False
    access = "decision"

    def __init__(self, *, variant: str = "negative", **common):
        super().__init__(**common)
        self.variant = check_choice(self.name, "variant", variant, VARIANTS)

    @torch.no_grad()
    def _run(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None) -> tuple[Tensor, dict]:
        x_adv = self.project(negative_image(x, self.bounds, self.variant), x)
        return x_adv, {"fooled": fooled(model(x_adv), y, False).cpu()}
