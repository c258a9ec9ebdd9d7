"""Loss gradients shared by the gradient attacks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def loss_gradient(model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None = None) -> Tensor:
    """Gradient of the attacker's objective with respect to ``x``.

    Untargeted: ascend the cross-entropy of the true class ``y``. Targeted:
    descend the cross-entropy of ``target``, returned negated so that an attack
    always steps *along* the gradient.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        if target is None:
            loss = F.cross_entropy(logits, y, reduction="sum")
        else:
            loss = -F.cross_entropy(logits, target, reduction="sum")
        (gradient,) = torch.autograd.grad(loss, x)
    return gradient


def normalized_step(gradient: Tensor, norm: str) -> Tensor:
    """The steepest-ascent direction of unit size in ``norm``: sign for L-inf, unit L2 vector for L2."""
    if norm == "linf":
        return gradient.sign()
    flat = gradient.reshape(gradient.shape[0], -1)
    return (flat / flat.norm(p=2, dim=1, keepdim=True).clamp_min(1e-12)).view_as(gradient)
