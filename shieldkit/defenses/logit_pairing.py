"""Logit pairing (Kannan et al. 2018): adversarial or clean pairs of logits pulled together."""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from shieldkit.core.attack import Attack
from shieldkit.core.validation import check_choice, check_number
from shieldkit.defenses.training import AttackTrainer, train

PAIRINGS = ("adversarial", "clean")


class LogitPairing(AttackTrainer):
    """Adversarial training plus ``weight`` times the mean squared distance between paired logits.

    ``pairing="adversarial"`` (ALP): each clean example is paired with its
    adversarial example, ``alpha * L(x) + (1 - alpha) * L(x_adv) + weight * ||f(x) - f(x_adv)||^2``.
    ``pairing="clean"`` (CLP): no attack; random pairs of clean examples of the batch
    are pulled together, ``L(x) + weight * ||f(x_i) - f(x_j)||^2``.

    Engstrom, Ilyas and Athalye (2018) showed ALP's ImageNet robustness to be far
    lower than reported once PGD is run long enough; evaluate accordingly.

    Args:
        attack: a registered attack name or an ``Attack`` (Kannan et al. use PGD).
        eps: the attack's budget; ``None`` keeps the attack's default.
        weight: lambda, the weight of the pairing term, ``>= 0``.
        pairing: ``"adversarial"`` (ALP) or ``"clean"`` (CLP).
        alpha: weight of the clean cross-entropy in the ALP mix, in ``[0, 1]``.
        attack_params: more parameters for the attack.
        **common: ``bounds``, ``seed``.

    ``fit`` takes the options of every trainer (``epochs``, ``batch_size``, ``lr``,
    ``checkpoint_dir``, ``resume``, ``quiet``, ``seed``, ``device``).

    Reference:
        Kannan, Kurakin, Goodfellow. Adversarial Logit Pairing. arXiv:1803.06373, 2018.
    """

    family = "logit_pairing"
    smoke_params: ClassVar[dict[str, Any]] = {"eps": 0.1, "attack_params": {"steps": 2}}

    def __init__(
        self,
        *,
        attack: str | Attack = "pgd",
        eps: float | None = None,
        weight: float = 0.5,
        pairing: str = "adversarial",
        alpha: float = 0.5,
        attack_params: dict | None = None,
        **common,
    ):
        super().__init__(**common)
        owner = self.name
        self.weight = check_number(owner, "weight", weight, 0.0)
        self.pairing = check_choice(owner, "pairing", pairing, PAIRINGS)
        self.alpha = check_number(owner, "alpha", alpha, 0.0, 1.0)
        self._set_attack(attack, eps, attack_params)

    def pairing_loss(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """The loss of one batch."""
        if self.pairing == "clean":
            logits = model(x)
            half = x.shape[0] // 2
            loss = F.cross_entropy(logits, y)
            if half == 0:
                return loss
            return loss + self.weight * F.mse_loss(logits[:half], logits[half:2 * half])
        x_adv = self.attack_(model, x, y)
        clean, adversarial = model(x), model(x_adv)
        loss = self.alpha * F.cross_entropy(clean, y) + (1 - self.alpha) * F.cross_entropy(adversarial, y)
        return loss + self.weight * F.mse_loss(clean, adversarial)

    def _train(self, model: nn.Module, x: Tensor, y: Tensor, options: dict) -> nn.Module:
        return train(self.name, model, x, y, self.pairing_loss, config=self.get_params(), **options)
