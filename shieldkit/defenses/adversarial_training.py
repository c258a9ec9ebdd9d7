"""Adversarial training: the mixed clean/adversarial loss of Goodfellow et al. 2015 (Madry et al. 2018 at alpha=0)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from shieldkit.core.attack import Attack
from shieldkit.core.validation import check_number
from shieldkit.defenses.training import AttackTrainer, train


class AdversarialTraining(AttackTrainer):
    """Train on ``alpha * L(x) + (1 - alpha) * L(x_adv)`` with examples from any registered attack.

    The examples are crafted on the model being trained, batch by batch, with
    the true labels (crafting against the model's own predictions would leak the
    label). ``alpha=0`` with ``attack="pgd"`` is Madry et al.'s min-max training;
    ``alpha=0.5`` with ``attack="fgsm"`` is Goodfellow et al.'s.

    Args:
        attack: a registered attack name (``"fgsm"``, ``"pgd"``, ``"pgd.torchattacks"``,
            ...) or an ``Attack`` instance. An unknown name raises
            ``UnknownNameError`` here, before any training.
        eps: the attack's budget; ``None`` keeps the attack's default (or
            ``attack_params["eps"]``).
        alpha: weight of the clean loss, in ``[0, 1]``.
        attack_params: more parameters for the attack (``{"steps": 7, "step_size": 0.01}``).
        **common: ``bounds``, ``seed``.

    ``fit(model, train_data, *, epochs=1, batch_size=128, lr=1e-3, checkpoint_dir=None,
    resume=False, quiet=True, seed=0, device=None)`` trains a copy of ``model`` with
    Adam and returns it in eval mode.

    Reference:
        Goodfellow, Shlens, Szegedy. Explaining and Harnessing Adversarial Examples. ICLR 2015.
        Madry, Makelov, Schmidt, Tsipras, Vladu. Towards Deep Learning Models Resistant to
        Adversarial Attacks. ICLR 2018.
    """

    family = "adversarial_training"
    smoke_params: ClassVar[dict[str, Any]] = {"attack": "fgsm", "eps": 0.1}

    def __init__(
        self,
        *,
        attack: str | Attack = "fgsm",
        eps: float | None = None,
        alpha: float = 0.5,
        attack_params: dict | None = None,
        **common,
    ):
        super().__init__(**common)
        self.alpha = check_number(self.name, "alpha", alpha, 0.0, 1.0)
        self._set_attack(attack, eps, attack_params)

    def adversarial_loss(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor | None]:
        """The mixed loss of one batch, and the adversarial logits (``None`` when ``alpha == 1``)."""
        loss = x.new_zeros(())
        adversarial_logits = None
        if self.alpha < 1:
            x_adv = self.attack_(model, x, y)
            adversarial_logits = model(x_adv)
            loss = loss + (1 - self.alpha) * F.cross_entropy(adversarial_logits, y)
        if self.alpha > 0:
            loss = loss + self.alpha * F.cross_entropy(model(x), y)
        return loss, adversarial_logits

    def prepare(self, model: nn.Module) -> nn.Module:
        """The network that is trained (a subclass may change its architecture first)."""
        return model

    def _train(self, model: nn.Module, x: Tensor, y: Tensor, options: dict) -> nn.Module:
        def step(net: nn.Module, xb: Tensor, yb: Tensor) -> Tensor:
            return self.adversarial_loss(net, xb, yb)[0]

        return train(self.name, self.prepare(model), x, y, step, config=self.get_params(), **options)
