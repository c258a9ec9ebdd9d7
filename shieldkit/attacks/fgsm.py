"""Fast Gradient Sign Method (Goodfellow et al. 2015) and its L2 form, FGM."""

from __future__ import annotations

from torch import Tensor, nn

from shieldkit.attacks._gradients import loss_gradient, normalized_step
from shieldkit.core.attack import Attack


class FGSM(Attack):
    """One step of size ``eps`` along the sign (L-inf) or unit direction (L2) of the loss gradient.

    Targeted (T-FGSM, Kurakin et al. 2017): one step *down* the cross-entropy of
    the target class.

    Reference:
        Goodfellow, Shlens, Szegedy. Explaining and Harnessing Adversarial Examples. ICLR 2015.
    """

    family = "fgsm"
    norms = ("linf", "l2")

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        step = normalized_step(loss_gradient(model, x, y, target), self.norm)
        return self.project(x + self.eps * step, x)
