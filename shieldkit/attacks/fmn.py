"""Fast Minimum-Norm attack (Pintor et al., NeurIPS 2021): the minimal-norm attack of the AutoAttack-strength suite."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from shieldkit.core.attack import Attack
from shieldkit.core.losses import margin
from shieldkit.core.threat import norm_of
from shieldkit.core.validation import check_int, check_number

#: The initial step ``alpha_0`` per norm (the paper's values: a unit-L2 gradient step is tiny in L-inf terms).
DEFAULT_STEP = {"l2": 1.0, "linf": 10.0}
DUAL = {"l2": "l2", "linf": "l1"}


def cosine_annealed(start: float, end: float, iteration: int, total: int) -> float:
    """``end + (start - end) * (1 + cos(pi * iteration / total)) / 2``: ``start`` at 0, ``end`` at ``total``."""
    return end + (start - end) * (1 + math.cos(math.pi * iteration / total)) / 2


class FMN(Attack):
    """Minimal perturbation by gradient steps inside a ball whose radius adapts per sample.

    Each iteration ascends the logit margin (``max_{j!=y} z_j - z_y``; targeted:
    ``z_t - max_{j!=t} z_j``) with a unit-L2 gradient step of size ``alpha_k``, then
    projects onto the ``norm`` ball of radius ``eps_k`` and the bounds. The radius
    shrinks by ``(1 - gamma_k)`` (and to the smallest adversarial norm found) while
    the point is adversarial and grows by ``(1 + gamma_k)`` once one was found but
    the point is not; before any is found it is the first-order distance to the
    boundary, ``||delta|| + |margin| / ||grad||_dual``. ``alpha_k`` and ``gamma_k``
    are cosine-annealed to ``alpha_0 / 100`` and ``gamma_K = 0.001``. The result is
    the adversarial point of smallest norm seen (the clean image if none was).

    Why FMN in FAB's role: both find minimally distorted points from the boundary's
    linearisation, but FMN needs one forward and one backward pass per step, where
    FAB needs the gradient of every class's logit (a Jacobian) and a projection onto
    a hyperplane within the box; Pintor et al. report norms as small as FAB's or
    smaller at a fraction of its cost, so the suite's minimal-norm member is cheap.

    With ``eps`` given (an evaluation), a sample leaves the batch as soon as it has
    an adversarial point inside the ball: only success within ``eps`` is kept, and
    the base class projects the rest onto the ball. A sample misclassified at the
    start leaves at once. Deterministic (it starts at the clean image).
    ``info["norm"]`` (``[B]``) is the smallest adversarial norm found (``inf`` if none).

    Args:
        steps: iterations (the paper: 100 to 1000).
        step_size: initial step ``alpha_0``; ``None`` means 1.0 for L2, 10.0 for L-inf.
        gamma: initial radius change ``gamma_0``.
        **common: ``eps`` (optional), ``norm`` (``"linf"`` or ``"l2"``), ``bounds``, ``seed``.

    Reference:
        Pintor, Roli, Brendel, Biggio. Fast Minimum-norm Adversarial Attacks through
        Adaptive Norm Constraints. NeurIPS 2021.
    """

    family = "fmn"
    norms = ("linf", "l2")
    bounded = False
    smoke_params = {"steps": 10}

    def __init__(self, *, steps: int = 100, step_size: float | None = None, gamma: float = 0.05, **common):
        super().__init__(**common)
        owner = self.name
        self.steps = check_int(owner, "steps", steps, minimum=1)
        self.step_size = None if step_size is None else check_number(owner, "step_size", step_size, 0.0, strict=True)
        self.gamma = check_number(owner, "gamma", gamma, 0.0, 1.0, strict=True)

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None) -> tuple[Tensor, dict]:
        norm, low, high = self.norm, *self.bounds
        targeted = target is not None
        labels = target if targeted else y
        alpha_start = self.step_size if self.step_size is not None else DEFAULT_STEP[norm]
        alpha_end, gamma_end = alpha_start / 100, min(0.001, self.gamma)
        size = x.shape[0]
        best = x.clone()
        best_norm = torch.full((size,), float("inf"), dtype=x.dtype, device=x.device)
        # The farthest any point in the bounds can be: the radius never needs to grow past it.
        farthest = norm_of(torch.maximum(x - low, high - x), norm)
        rows = torch.arange(size, device=x.device)
        x_rows, labels_rows, farthest_rows = x, labels, farthest
        delta = torch.zeros_like(x)
        radius = torch.full((size,), float("inf"), dtype=x.dtype, device=x.device)
        found = torch.zeros(size, dtype=torch.bool, device=x.device)
        for iteration in range(self.steps):
            last = iteration == self.steps - 1
            point = (x_rows + delta).detach().requires_grad_(not last)
            with torch.enable_grad():
                logits = model(point)
                values = margin(logits, labels_rows, targeted)
                gradient = None if last else torch.autograd.grad(values.sum(), point)[0]
            point = point.detach()
            predictions = logits.detach().argmax(dim=1)
            adversarial = predictions == labels_rows if targeted else predictions != labels_rows
            length = norm_of(delta, norm)
            smaller = adversarial & (length < best_norm[rows])
            best[rows[smaller]] = point[smaller]
            best_norm[rows[smaller]] = length[smaller]
            if last:
                break
            # A sample leaves when nothing more can be gained: inside the ball when eps is given,
            # and at once when the start itself was adversarial (a zero perturbation is minimal).
            settled = best_norm[rows] == 0
            if self.eps is not None:
                settled |= best_norm[rows] <= self.eps
            if settled.any():
                keep = ~settled
                rows, x_rows, labels_rows, farthest_rows = rows[keep], x_rows[keep], labels_rows[keep], farthest_rows[keep]
                delta, radius, found, adversarial = delta[keep], radius[keep], found[keep], adversarial[keep]
                values, gradient, length, point = values[keep], gradient[keep], length[keep], point[keep]
                if rows.numel() == 0:
                    break
            alpha = cosine_annealed(alpha_start, alpha_end, iteration, self.steps)
            gamma = cosine_annealed(self.gamma, gamma_end, iteration, self.steps)
            found |= adversarial
            # Components pushing a pixel already at a bound further out would be clipped away: drop them
            # before measuring the distance and normalising the step (as DeepFool does), or the estimate
            # and the step both fall short (on MNIST most pixels sit at 0).
            gradient = gradient.masked_fill_(((point <= low) & (gradient < 0)) | ((point >= high) & (gradient > 0)), 0.0)
            flat = gradient.flatten(1)
            to_boundary = values.detach().abs() / norm_of(gradient, DUAL[norm]).clamp_min(1e-12)
            radius = torch.where(
                adversarial,
                torch.minimum(radius * (1 - gamma), best_norm[rows]),
                torch.where(found, radius * (1 + gamma), length + to_boundary),
            ).minimum(farthest_rows)
            step = (flat / flat.norm(p=2, dim=1, keepdim=True).clamp_min(1e-12)).view_as(delta)
            delta = self._project(delta + alpha * step, radius)
            delta = (x_rows + delta).clamp_(low, high) - x_rows
        return best, {"norm": best_norm.cpu()}

    def _project(self, delta: Tensor, radius: Tensor) -> Tensor:
        """Each row of ``delta`` onto the ``norm`` ball of its own ``radius``."""
        shape = (-1,) + (1,) * (delta.dim() - 1)
        if self.norm == "linf":
            bound = radius.view(shape)
            return torch.maximum(torch.minimum(delta, bound), -bound)
        lengths = norm_of(delta, "l2")
        factor = torch.where(lengths > radius, radius / lengths.clamp_min(1e-12), torch.ones_like(lengths))
        return delta * factor.view(shape)
