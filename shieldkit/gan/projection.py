"""Projection onto a generator's range: z* = argmin_z ||G(z) - x||^2 (Defense-GAN, Invert-and-Classify).

All ``B x R`` latents (B images, R random restarts) are optimised together in one
tensor by gradient descent with momentum; each image keeps its best restart.
The defaults are those of the Defense-GAN code: ``L=200`` steps, ``R=10``
restarts, SGD with momentum 0.7 and learning rate 10 on the per-image mean
squared error, the rate cut tenfold after ``0.8 L`` steps, and ``z0 ~ N(0, 1/latent_dim)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from shieldkit.core.errors import InvalidInputError, InvalidParameterError
from shieldkit.core.guard import ModelStateGuard
from shieldkit.core.validation import check_int, check_number

__all__ = ["Projection", "check_projection_params", "project"]

STEPS, RESTARTS, LR, MOMENTUM, DECAY_AT, DECAY = 200, 10, 10.0, 0.7, 0.8, 0.1


@dataclass
class Projection:
    """The result of :func:`project`.

    Attributes:
        images: ``G(z*)`` ``[B, C, H, W]``: each input's closest image in the generator's range.
        error: ``[B]`` per-image mean squared error ``||G(z*) - x||^2 / D`` of the kept restart.
        z: ``[B, latent_dim]`` the kept latents.
        restart_errors: ``[B, R]`` the final error of every restart.
    """

    images: Tensor
    error: Tensor
    z: Tensor
    restart_errors: Tensor


def check_projection_params(owner: str, steps: int, restarts: int, lr: float, momentum: float,
                            decay_at: float, decay: float, init_std: float | None,
                            batch_size: int | None) -> None:
    """Validate the projection's settings, naming the bad one."""
    check_int(owner, "steps", steps, minimum=1)
    check_int(owner, "restarts", restarts, minimum=1)
    check_number(owner, "lr", lr, 0.0, strict=True)
    check_number(owner, "momentum", momentum, 0.0, 1.0)
    check_number(owner, "decay_at", decay_at, 0.0, 1.0)
    check_number(owner, "decay", decay, 0.0, 1.0, strict=True)
    if init_std is not None:
        check_number(owner, "init_std", init_std, 0.0)
    if batch_size is not None:
        check_int(owner, "batch_size", batch_size, minimum=1)


def check_generator(owner: str, generator: object, x: Tensor | None = None) -> nn.Module:
    """A generator module with ``latent_dim`` (and, given ``x``, an ``image_shape`` that fits it)."""
    if not isinstance(generator, nn.Module) or not isinstance(getattr(generator, "latent_dim", None), int):
        raise InvalidParameterError(
            f"{owner}: generator must be an nn.Module with an int attribute latent_dim "
            f"(e.g. shieldkit.gan.vae()), got {type(generator).__name__}"
        )
    shape = getattr(generator, "image_shape", None)
    if x is not None and shape is not None and tuple(x.shape[1:]) != tuple(shape):
        raise InvalidInputError(
            f"{owner}: the generator draws images of shape {tuple(shape)} but x has shape {tuple(x.shape[1:])}; "
            "use a generator trained on images like x"
        )
    return generator


def project(
    generator: nn.Module,
    x: Tensor,
    *,
    steps: int = STEPS,
    restarts: int = RESTARTS,
    lr: float = LR,
    momentum: float = MOMENTUM,
    decay_at: float = DECAY_AT,
    decay: float = DECAY,
    init_std: float | None = None,
    batch_size: int | None = None,
    rng: torch.Generator | None = None,
    z_init: Tensor | None = None,
    differentiable: bool = False,
) -> Projection:
    """Project images onto the range of ``generator`` by batched gradient descent in latent space.

    Args:
        generator: latents ``[N, latent_dim]`` to images shaped like ``x``; used in
            eval mode with frozen parameters (its state is restored afterwards).
        x: images ``[B, C, H, W]``.
        steps: ``L``, gradient steps per restart.
        restarts: ``R``, random starting points per image; the lowest final error wins.
        lr: learning rate on the per-image mean squared error.
        momentum: heavy-ball momentum (``v = m v + g; z -= lr v``).
        decay_at, decay: after ``decay_at * steps`` steps the rate is multiplied by ``decay``.
        init_std: standard deviation of ``z0``; ``None`` is ``sqrt(1 / latent_dim)``.
        batch_size: project this many images at a time (``B x R`` latents are
            optimised together within a batch); ``None`` projects all at once.
        rng: draws ``z0`` (``None``: torch's global RNG).
        z_init: the starting latents ``[B, R, latent_dim]`` instead of random ones
            (warm starts, reproducible comparisons).
        differentiable: keep the graph of the unrolled optimisation so that the
            result can be differentiated with respect to ``x`` (memory grows with
            ``steps``: use small ``L``).

    Returns:
        a :class:`Projection` (images, per-image error, latents, every restart's error).

    Shape:
        x ``[B, C, H, W]`` -> images ``[B, C, H, W]``, error ``[B]``, z ``[B, latent_dim]``.

    Reference:
        Samangouei, Kabkab, Chellappa. Defense-GAN: Protecting Classifiers Against
        Adversarial Attacks Using Generative Models. ICLR 2018.
        Ilyas, Jalal, Asteri, Daskalakis, Dimakis. The Robust Manifold Defense. 2017.
    """
    check_generator("project", generator, x)
    check_projection_params("project", steps, restarts, lr, momentum, decay_at, decay, init_std, batch_size)
    wanted = (x.shape[0], restarts, generator.latent_dim)
    if z_init is not None and (not isinstance(z_init, Tensor) or tuple(z_init.shape) != wanted):
        found = tuple(z_init.shape) if isinstance(z_init, Tensor) else type(z_init).__name__
        raise InvalidInputError(f"project: z_init must have shape [B, R, latent_dim] = {list(wanted)}, got {found}")
    settings = (steps, restarts, lr, momentum, decay_at, decay, init_std, rng, differentiable)
    if batch_size is None or batch_size >= x.shape[0]:
        return _project(generator, x, z_init, *settings)
    parts = [
        _project(generator, x[i:i + batch_size], None if z_init is None else z_init[i:i + batch_size], *settings)
        for i in range(0, x.shape[0], batch_size)
    ]
    return Projection(*(torch.cat([getattr(p, f) for p in parts]) for f in ("images", "error", "z", "restart_errors")))


def _project(generator, x, z_init, steps, restarts, lr, momentum, decay_at, decay, init_std, rng,
             differentiable) -> Projection:
    batch = x.shape[0]
    latent_dim = generator.latent_dim
    std = math.sqrt(1.0 / latent_dim) if init_std is None else init_std
    target = x if differentiable else x.detach()
    # Restart r of image b sits at row b * R + r: one tensor, one generator call per step.
    target = target.repeat_interleave(restarts, dim=0).flatten(1)
    if z_init is None:
        z = std * torch.randn(batch * restarts, latent_dim, generator=rng, device=x.device, dtype=x.dtype)
    else:
        z = z_init.detach().reshape(batch * restarts, latent_dim).to(device=x.device, dtype=x.dtype)
    velocity = torch.zeros_like(z)
    decay_step = int(decay_at * steps)
    with ModelStateGuard(generator), torch.enable_grad():
        for step in range(steps):
            rate = lr * (decay if step >= decay_step else 1.0)
            if not z.requires_grad:
                z.requires_grad_(True)
            loss = (generator(z).flatten(1) - target).square().mean(dim=1).sum()
            (gradient,) = torch.autograd.grad(loss, z, create_graph=differentiable)
            velocity = momentum * velocity + gradient
            z = z - rate * velocity
            if not differentiable:
                z, velocity = z.detach(), velocity.detach()
        with torch.set_grad_enabled(differentiable):
            images = generator(z)
            errors = (images.flatten(1) - target).square().mean(dim=1).view(batch, restarts)
    best = errors.detach().argmin(dim=1)
    rows = torch.arange(batch, device=x.device) * restarts + best
    return Projection(
        images=images[rows].view_as(x),
        error=errors.gather(1, best[:, None]).squeeze(1),
        z=z[rows],
        restart_errors=errors.detach(),
    )
