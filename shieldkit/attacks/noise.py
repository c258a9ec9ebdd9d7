"""Random noise inside the epsilon-ball: the baseline every real attack must beat."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from shieldkit.core.attack import Attack
from shieldkit.core.losses import fooled
from shieldkit.core.validation import check_choice, check_int, check_number

DISTRIBUTIONS = ("uniform", "gaussian")


def uniform_ball(like: Tensor, norm: str, eps: float) -> Tensor:
    """Perturbations drawn uniformly from the ``norm`` ball of radius ``eps``, one per sample.

    L-inf: every pixel uniform in ``[-eps, eps]``. L2: a uniform direction (a
    normalised Gaussian) times the radius ``eps * u ** (1 / d)``, which is what
    makes the draw uniform in the volume of the ball.

    Shape:
        ``like`` ``[B, ...]`` -> ``[B, ...]`` (same dtype and device).
    """
    if norm == "linf":
        return torch.empty_like(like).uniform_(-eps, eps)
    direction = torch.randn_like(like)
    flat = direction.reshape(like.shape[0], -1)
    dims = flat.shape[1]
    radius = eps * torch.rand(like.shape[0], 1, dtype=like.dtype, device=like.device) ** (1.0 / dims)
    return (flat * (radius / flat.norm(p=2, dim=1, keepdim=True).clamp_min(1e-12))).view_as(like)


class Noise(Attack):
    """Uniform or Gaussian noise in the epsilon-ball, clipped to the bounds; no gradients used.

    With ``restarts > 1`` each sample gets up to ``restarts`` independent draws and
    keeps the first one that fools the model (labels only are read, so the attack
    is decision-based); a sample that no draw fools keeps its last draw, so the
    attack also measures accuracy under random noise.

    Args:
        distribution: ``"uniform"`` (uniform in the ball) or ``"gaussian"`` (i.i.d.
            Gaussian pixels, then projected onto the ball).
        sigma: standard deviation of the Gaussian per pixel; ``None`` uses ``eps / 2``
            for L-inf and ``eps / sqrt(C*H*W)`` for L2 (expected norm about ``eps``).
            Ignored for ``"uniform"``.
        restarts: draws per sample, at least 1.
        **common: ``eps``, ``norm`` (``"linf"`` or ``"l2"``), ``bounds``, ``seed``.

    Reference:
        Szegedy et al. Intriguing properties of neural networks. ICLR 2014 (random
        noise as the baseline that adversarial perturbations of the same size beat).
    """

    family = "noise"
    norms = ("linf", "l2")
    access = "decision"
    randomized = True
    smoke_params = {"restarts": 2}

    def __init__(self, *, distribution: str = "uniform", sigma: float | None = None, restarts: int = 1, **common):
        super().__init__(**common)
        owner = self.name
        self.distribution = check_choice(owner, "distribution", distribution, DISTRIBUTIONS)
        self.sigma = None if sigma is None else check_number(owner, "sigma", sigma, minimum=0.0)
        self.restarts = check_int(owner, "restarts", restarts, minimum=1)

    def draw(self, x: Tensor) -> Tensor:
        """One noisy copy of ``x``, inside the epsilon-ball and the bounds."""
        if self.distribution == "uniform":
            return self.project(x + uniform_ball(x, self.norm, self.eps), x)
        sigma = self.sigma
        if sigma is None:
            sigma = self.eps / 2 if self.norm == "linf" else self.eps / x[0].numel() ** 0.5
        return self.project(x + sigma * torch.randn_like(x), x)

    @torch.no_grad()
    def _run(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        targeted = target is not None
        labels = target if targeted else y
        x_adv = x.clone()
        pending = torch.arange(x.shape[0], device=x.device)
        for _ in range(self.restarts):
            candidate = self.draw(x[pending])
            x_adv[pending] = candidate
            done = fooled(model(candidate), labels[pending], targeted)
            pending = pending[~done]
            if pending.numel() == 0:
                break
        return x_adv
