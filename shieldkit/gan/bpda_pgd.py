"""BPDA-PGD: PGD through a transform defence such as the Defense-GAN projection (Athalye et al. 2018)."""

from __future__ import annotations

from torch import Tensor, nn

from shieldkit.attacks.pgd import PGD
from shieldkit.core.defense import GRADIENTS, AttackView, DefendedModel
from shieldkit.core.validation import check_choice

__all__ = ["BPDAPGD"]


class BPDAPGD(PGD):
    """PGD whose gradients pass through the defence of a ``DefendedModel`` by BPDA (or exactly).

    Give it the deployed model, e.g. ``sk.create_defense("inc", generator=G).wrap(classifier)``:
    the forward pass goes through the projection, the backward pass treats the
    projection as the identity (``gradient="bpda"``), through its surrogate, or
    through the unrolled projection (``gradient="exact"``, small ``steps`` of the
    projection only). Success is measured on the deployed model. A plain model has
    no defence to approximate, and the attack is PGD. ``eot`` averages gradients
    over the projection's random restarts.

    Args:
        gradient: ``"bpda"``, ``"surrogate"`` or ``"exact"``.
        steps, step_size, random_start, restarts, loss, early_stop, eot: as for ``pgd``.
        **common: ``eps``, ``norm``, ``bounds``, ``seed``.

    Reference:
        Athalye, Carlini, Wagner. Obfuscated Gradients Give a False Sense of Security:
        Circumventing Defenses to Adversarial Examples. ICML 2018.
    """

    family = "bpda_pgd"

    def __init__(self, *, gradient: str = "bpda", **pgd_and_common):
        super().__init__(**pgd_and_common)
        self.gradient = check_choice(self.name, "gradient", gradient, GRADIENTS)

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        if isinstance(model, DefendedModel):
            model = model.attack_view(gradient=self.gradient)
        elif isinstance(model, AttackView) and model.gradient != self.gradient:
            model = model.defended.attack_view(gradient=self.gradient, eot=model.eot)
        return super()._run(model, x, y, target)
