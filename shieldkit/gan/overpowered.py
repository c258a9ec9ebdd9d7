"""The latent-space ("overpowered") attack on Invert-and-Classify: search z so that G(z) is near x and misclassified."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from shieldkit.core import losses
from shieldkit.core.attack import Attack
from shieldkit.core.component import Component
from shieldkit.core.defense import AttackView, DefendedModel
from shieldkit.core.guard import ModelStateGuard
from shieldkit.core.validation import check_int, check_number
from shieldkit.gan.cache import check_generator_spec, resolve_generator
from shieldkit.gan.defense_gan import SMOKE_PARAMS, ProjectionSettings
from shieldkit.gan.projection import project

__all__ = ["Overpowered", "latent_attack"]

# How each setting of the latent-space attack (and of the inversion that starts it) is checked.
_LATENT_ATTACK_CHECKS: dict[str, Callable[[str, str, object], float]] = {
    "steps": partial(check_int, minimum=1),
    "lr": partial(check_number, minimum=0.0, strict=True),
    "c": partial(check_number, minimum=0.0, strict=True),
    "c_rate": partial(check_number, minimum=0.0),
    "kappa": partial(check_number, minimum=0.0),
    "projection_steps": partial(check_int, minimum=1),
    "projection_restarts": partial(check_int, minimum=1),
}


def set_latent_attack_settings(component: Component, **settings: float) -> None:
    """Check settings of :func:`latent_attack` and its starting projection; keep each as an attribute of that name.

    ``EnhancedINC`` calls the attack's steps and rate ``attack_steps`` and
    ``attack_lr``; they are checked as ``steps`` and ``lr``.
    """
    for name, value in settings.items():
        check = _LATENT_ATTACK_CHECKS[name.removeprefix("attack_")]
        setattr(component, name, check(component.name, name, value))


def latent_attack(
    classifier: nn.Module,
    generator: nn.Module,
    x: Tensor,
    labels: Tensor,
    z0: Tensor,
    *,
    eps: float,
    steps: int = 100,
    lr: float = 0.05,
    c: float = 1.0,
    c_rate: float = 0.1,
    kappa: float = 2.0,
    targeted: bool = False,
) -> tuple[Tensor, Tensor]:
    """Minimise ``||G(z) - x||^2 + c * max(margin(f(G(z))), -kappa)`` over ``z`` with Adam, from ``z0``.

    Keeps, per image, the iterate inside the L2 ball of radius ``eps`` with the
    lowest margin (the most confidently misclassified one); the margin ``kappa`` is
    what lets the example survive a fresh projection. Both networks should be in
    eval mode; their parameters and gradients are left untouched.

    No single ``c`` suits every image: too small and the search never leaves the
    clean reconstruction, too large and it leaves the ball. So each image has its
    own ``c``, multiplied by ``1 + c_rate`` after a step that ends inside the ball
    short of the margin ``kappa`` and divided by it after a step that ends outside
    (a one-run stand-in for Carlini and Wagner's binary search over ``c``);
    ``c_rate=0`` keeps ``c`` fixed, the plain objective of Ilyas et al.

    Returns:
        ``(images, margins)``: ``[B, C, H, W]`` the kept ``G(z)`` (``G(z0)`` pulled into
        the ball where no iterate was inside) and their ``[B]`` margins (``< 0``: fooled).
    """
    flat_x = x.flatten(1)
    with torch.no_grad():
        start = generator(z0)
        delta = start.flatten(1) - flat_x
        shrink = (eps / delta.norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
        best = (flat_x + shrink[:, None] * delta).view_as(x)
        best_margin = -losses.margin(classifier(best), labels, targeted)
    z = z0.detach().clone().requires_grad_(True)
    weight = torch.full_like(best_margin, c)
    optimizer = torch.optim.Adam([z], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            images = generator(z)
            distance = (images.flatten(1) - flat_x).square().sum(dim=1)
            margin = -losses.margin(classifier(images), labels, targeted)
            loss = (distance + weight * margin.clamp(min=-kappa)).sum()
            # Gradients for z only: the networks' parameters (and their .grad) are never touched.
            (z.grad,) = torch.autograd.grad(loss, z)
            optimizer.step()
            with torch.no_grad():
                inside = distance <= eps * eps
                better = inside & (margin < best_margin)
                best[better] = images[better].detach()
                best_margin = torch.where(better, margin.detach(), best_margin)
                if c_rate > 0:
                    grow = inside & (margin > -kappa)
                    weight = torch.where(grow, weight * (1 + c_rate), torch.where(inside, weight, weight / (1 + c_rate)))
    return best, best_margin


class Overpowered(Attack):
    """Search the generator's latent space for an image within ``eps`` (L2) of ``x`` that the classifier gets wrong.

    Because the result lies (up to the ball's edge) in the generator's range, the
    projection of Defense-GAN / INC returns it almost unchanged, so the classifier
    behind the projection sees an on-manifold adversarial example. Starting from
    INC's own inversion ``z0``, Adam minimises ``||G(z) - x||^2 + c * max(margin, -kappa)``,
    adapting ``c`` per image so that the search uses the whole budget (see :func:`latent_attack`).

    Give it the deployed INC model (``sk.create_defense("inc", generator=G).wrap(clf)``):
    its classifier and generator are used and success is measured on the whole
    defence. With a plain classifier, pass ``generator=``.

    Args:
        generator: a generator module, a saved generator's path, or ``None`` (the
            defence's generator for an INC model; else the cached MNIST VAE).
        steps: Adam steps in latent space.
        lr: Adam's learning rate.
        c: starting weight of the margin loss against the squared distance.
        c_rate: per-step relative change of each image's ``c`` (0: fixed ``c``).
        kappa: the margin the attack aims for (robustness to re-projection).
        projection_steps, projection_restarts: the inversion that finds ``z0``.
        eps: L2 budget (default 3.9, about 0.005 squared error per MNIST pixel, Athalye et al.'s budget).
        **common: ``norm`` (``"l2"``), ``bounds``, ``seed``.

    Reference:
        Ilyas, Jalal, Asteri, Daskalakis, Dimakis. The Robust Manifold Defense. arXiv:1712.09196, 2017.
        Athalye, Carlini, Wagner. Obfuscated Gradients Give a False Sense of Security. ICML 2018.
    """

    family = "overpowered"
    norms = ("l2",)
    randomized = True
    smoke_params: ClassVar[dict[str, Any]] = {
        "generator": SMOKE_PARAMS["generator"], "steps": 5, "projection_steps": 3, "projection_restarts": 2,
    }

    def __init__(
        self,
        *,
        generator: nn.Module | str | None = None,
        steps: int = 100,
        lr: float = 0.05,
        c: float = 1.0,
        c_rate: float = 0.1,
        kappa: float = 2.0,
        projection_steps: int = 200,
        projection_restarts: int = 10,
        eps: float | None = 3.9,
        **common,
    ):
        super().__init__(eps=eps, **common)
        self.generator = check_generator_spec(self.name, generator)
        set_latent_attack_settings(self, steps=steps, lr=lr, c=c, c_rate=c_rate, kappa=kappa,
                                   projection_steps=projection_steps, projection_restarts=projection_restarts)

    def _parts(self, model: nn.Module, x: Tensor) -> tuple[nn.Module, nn.Module]:
        """The classifier to fool and the generator to search, from an INC model or a plain one."""
        defended = model.defended if isinstance(model, AttackView) else model
        if isinstance(defended, DefendedModel) and isinstance(defended.defense, ProjectionSettings):
            generator = (defended.defense.generator_for(x) if self.generator is None
                         else resolve_generator(self.name, self.generator, x))
            return defended.model, generator
        return model, resolve_generator(self.name, self.generator, x)

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None) -> tuple[Tensor, dict]:
        classifier, generator = self._parts(model, x)
        generator = generator.to(x.device)
        with ModelStateGuard(generator):
            z0 = project(generator, x, steps=self.projection_steps, restarts=self.projection_restarts).z
            labels = y if target is None else target
            images, margins = latent_attack(
                classifier, generator, x, labels, z0, eps=self.eps, steps=self.steps, lr=self.lr, c=self.c,
                c_rate=self.c_rate, kappa=self.kappa, targeted=target is not None,
            )
        return self.project(images.to(x.dtype), x), {"margin": margins.cpu()}
