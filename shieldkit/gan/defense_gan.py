"""Defense-GAN / Invert-and-Classify (INC): classify the projection of the input onto a generator's range."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from shieldkit.core.defense import Defense, TransformDefense
from shieldkit.gan.cache import check_generator_spec, resolve_generator, smoke_generator
from shieldkit.gan.projection import (
    DECAY,
    DECAY_AT,
    LR,
    MOMENTUM,
    RESTARTS,
    STEPS,
    Projection,
    check_projection_params,
    project,
)

__all__ = ["DefenseGAN", "InvertAndClassify", "ProjectionSettings"]

#: the generator and budgets of the quick conformance runs (a tiny untrained VAE for 1x16x16 images).
SMOKE_PARAMS: dict[str, Any] = {"generator": smoke_generator((1, 16, 16)), "steps": 3, "restarts": 2}


class ProjectionSettings:
    """The projection parameters shared by the Defense-GAN transform and the reconstruction-error detector.

    Put it before the defence base class: its constructor takes the projection's
    parameters and passes ``**common`` on. The generator lives under
    ``generator_spec``; ``Defense.rng(device)`` is the defence's random-number
    generator, which draws the starting latents.
    """

    def __init__(
        self,
        *,
        generator: nn.Module | str | None = None,
        steps: int = STEPS,
        restarts: int = RESTARTS,
        lr: float = LR,
        momentum: float = MOMENTUM,
        decay_at: float = DECAY_AT,
        decay: float = DECAY,
        init_std: float | None = None,
        batch_size: int | None = None,
        **common,
    ):
        super().__init__(**common)
        owner = self.name
        self.generator_spec = check_generator_spec(owner, generator)
        check_projection_params(owner, steps, restarts, lr, momentum, decay_at, decay, init_std, batch_size)
        self.steps, self.restarts, self.lr, self.momentum = steps, restarts, float(lr), float(momentum)
        self.decay_at, self.decay, self.init_std, self.batch_size = float(decay_at), float(decay), init_std, batch_size
        self._resolved: nn.Module | None = None

    def get_params(self) -> dict[str, Any]:
        params = Defense.get_params(self)
        params["generator"] = self.generator_spec
        return params

    def generator_for(self, x: Tensor) -> nn.Module:
        """The generator (resolved on first use, on ``x``'s device), checked against ``x``'s image shape."""
        if self._resolved is None:
            self._resolved = resolve_generator(self.name, self.generator_spec, x)
        else:
            resolve_generator(self.name, self._resolved, x)
        if next(self._resolved.parameters(), x).device != x.device:
            self._resolved = self._resolved.to(x.device)
        return self._resolved

    def project(self, x: Tensor, *, differentiable: bool = False) -> Projection:
        """Project ``x`` onto the generator's range with this defence's settings (seeded by ``seed``)."""
        return project(
            self.generator_for(x), x, steps=self.steps, restarts=self.restarts, lr=self.lr, momentum=self.momentum,
            decay_at=self.decay_at, decay=self.decay, init_std=self.init_std, batch_size=self.batch_size,
            rng=self.rng(x.device), differentiable=differentiable,
        )


class DefenseGAN(ProjectionSettings, TransformDefense):
    """Replace the input by its closest image in a generator's range: ``G(argmin_z ||G(z) - x||^2)``.

    ``R`` random restarts of ``L`` steps of gradient descent with momentum, all
    ``B x R`` latents in one tensor; each image keeps its best restart. Put it in
    front of a classifier with ``wrap(model)`` (Invert-and-Classify).

    Attack views: ``gradient="bpda"`` backpropagates as the identity (Athalye et
    al.); ``gradient="exact"`` backpropagates through the unrolled projection
    (memory grows with ``steps x restarts x B``: use small ``steps``). The starting
    latents are random (``randomized=True``); ``seed`` makes them reproducible.

    Args:
        generator: a generator module (``latent_dim`` attribute, latents to images
            in ``bounds``), a path written by ``shieldkit train-generator``, or
            ``None``: a VAE trained on MNIST on first use and cached (1x28x28 only).
        steps: ``L`` (Defense-GAN: 200).
        restarts: ``R`` (Defense-GAN: 10).
        lr: learning rate on the per-image mean squared error (Defense-GAN: 10).
        momentum: SGD momentum (Defense-GAN: 0.7).
        decay_at, decay: the rate is multiplied by ``decay`` after ``decay_at * steps`` steps (0.8, 0.1).
        init_std: standard deviation of ``z0`` (``None``: ``sqrt(1/latent_dim)``).
        batch_size: images projected together (``None``: the whole batch).
        **common: ``bounds``, ``seed``.

    Reference:
        Samangouei, Kabkab, Chellappa. Defense-GAN: Protecting Classifiers Against
        Adversarial Attacks Using Generative Models. ICLR 2018.
        Ilyas, Jalal, Asteri, Daskalakis, Dimakis. The Robust Manifold Defense:
        Adversarial Training using Generative Models. arXiv:1712.09196, 2017.
    """

    family = "defense_gan"
    differentiable = True
    randomized = True
    # Backpropagating through the unrolled projection is costly and its gradient weak; BPDA through
    # the projection (Athalye et al.) and the latent-space attack (Ilyas et al., L2 only) are the known breaks.
    adaptive_gradient = "bpda"
    adaptive_attacks = (("overpowered", {}),)
    smoke_params: ClassVar[dict[str, Any]] = SMOKE_PARAMS

    def _transform(self, x: Tensor) -> Tensor:
        differentiable = torch.is_grad_enabled() and x.requires_grad
        return self.project(x, differentiable=differentiable).images.to(x.dtype)


class InvertAndClassify(DefenseGAN):
    """Invert-and-Classify (INC, Ilyas et al.): the same projection as ``defense_gan``, under its other name."""

    family = "inc"
