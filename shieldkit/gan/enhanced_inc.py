"""Enhanced Invert-and-Classify: retrain the classifier on projections and on-manifold adversarial examples."""

from __future__ import annotations

from typing import Any, ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from shieldkit.core.guard import ModelStateGuard
from shieldkit.core.validation import check_number
from shieldkit.defenses.training import LoopTrainer, train
from shieldkit.gan.cache import check_generator_spec, resolve_generator
from shieldkit.gan.defense_gan import SMOKE_PARAMS
from shieldkit.gan.overpowered import latent_attack, set_latent_attack_settings
from shieldkit.gan.projection import project

__all__ = ["EnhancedINC"]


class EnhancedINC(LoopTrainer):
    """Train the classifier of Invert-and-Classify on what it sees when deployed, and on what attacks it.

    Each mini-batch is projected onto the generator's range (``G(z*)``, the INC
    input) and, starting from ``z*``, a latent-space attack finds on-manifold
    adversarial examples ``G(z)`` within ``eps`` (L2) of the images. The loss is
    ``alpha * CE(f(G(z*)), y) + (1 - alpha) * CE(f(G(z_adv)), y)``: adversarial
    training in the generator's range, as in the Robust Manifold Defense. Deploy
    the result behind the projection: ``sk.create_defense("inc", generator=G).wrap(trained)``.

    Args:
        generator: a generator module, a saved generator's path, or ``None`` (the
            cached MNIST VAE).
        eps: L2 budget of the on-manifold examples.
        alpha: weight of the projected clean images in the loss, in ``[0, 1]``.
        attack_steps, attack_lr, c, c_rate, kappa: the latent-space attack (see ``overpowered``).
        projection_steps, projection_restarts: the inversion of each batch.
        **common: ``bounds``, ``seed``.

    ``fit(model, train_data, *, epochs=1, batch_size=128, lr=1e-3, checkpoint_dir=None,
    resume=False, quiet=True, seed=0, device=None)`` trains a copy of ``model`` with
    Adam and returns it in eval mode.

    Reference:
        Ilyas, Jalal, Asteri, Daskalakis, Dimakis. The Robust Manifold Defense:
        Adversarial Training using Generative Models. arXiv:1712.09196, 2017.
    """

    family = "enhanced_inc"
    smoke_params: ClassVar[dict[str, Any]] = {
        "generator": SMOKE_PARAMS["generator"], "attack_steps": 2, "projection_steps": 2, "projection_restarts": 1,
    }
    smoke_fit_options: ClassVar[dict[str, Any]] = {"epochs": 1, "batch_size": 3}

    def __init__(
        self,
        *,
        generator: nn.Module | str | None = None,
        eps: float = 3.9,
        alpha: float = 0.5,
        attack_steps: int = 20,
        attack_lr: float = 0.05,
        c: float = 1.0,
        c_rate: float = 0.1,
        kappa: float = 2.0,
        projection_steps: int = 200,
        projection_restarts: int = 10,
        **common,
    ):
        super().__init__(**common)
        owner = self.name
        self.generator_spec = check_generator_spec(owner, generator)
        self.eps = check_number(owner, "eps", eps, 0.0, strict=True)
        self.alpha = check_number(owner, "alpha", alpha, 0.0, 1.0)
        set_latent_attack_settings(
            self, attack_steps=attack_steps, attack_lr=attack_lr, c=c, c_rate=c_rate, kappa=kappa,
            projection_steps=projection_steps, projection_restarts=projection_restarts,
        )

    def get_params(self) -> dict[str, Any]:
        params = super().get_params()
        params["generator"] = self.generator_spec
        return params

    def _train(self, model: nn.Module, x: Tensor, y: Tensor, options: dict) -> nn.Module:
        generator = resolve_generator(self.name, self.generator_spec, x[:1])

        def step(net: nn.Module, xb: Tensor, yb: Tensor) -> Tensor:
            gen = generator.to(xb.device)
            with ModelStateGuard(gen):
                inverted = project(gen, xb, steps=self.projection_steps, restarts=self.projection_restarts)
                with ModelStateGuard(net):
                    adversarial, _ = latent_attack(
                        net, gen, xb, yb, inverted.z, eps=self.eps, steps=self.attack_steps, lr=self.attack_lr,
                        c=self.c, c_rate=self.c_rate, kappa=self.kappa,
                    )
            loss = xb.new_zeros(())
            if self.alpha > 0:
                loss = loss + self.alpha * F.cross_entropy(net(inverted.images), yb)
            if self.alpha < 1:
                loss = loss + (1 - self.alpha) * F.cross_entropy(net(adversarial), yb)
            return loss

        config = {k: v for k, v in self.get_params().items() if k != "generator"}
        return train(self.name, model, x, y, step, config=config, **options)
