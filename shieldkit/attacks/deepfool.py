"""DeepFool (Moosavi-Dezfooli et al. 2016), batched, with a final search back to the boundary."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from shieldkit.attack import Attack
from shieldkit.threat import norm_of
from shieldkit.validation import check_int, check_number

_TANGENT_MARGIN = 0.1


def _column(x: Tensor) -> tuple[int, ...]:
    """The shape that broadcasts one value per sample over ``x``."""
    return (-1,) + (1,) * (x.dim() - 1)


class DeepFool(Attack):
    """Minimal perturbation by repeatedly stepping to the nearest linearised decision boundary.

    At each iteration, for every sample still classified as ``y``, the logit
    differences ``f_k - f_y`` of the ``candidates - 1`` runner-up classes (the top
    classes of the clean image) are linearised; the step goes to the nearest of
    those hyperplanes in ``norm`` (L2: along ``w``; L-inf: along ``sign(w)``, the
    dual L1 norm measuring the distance). The iterate is ``x + (1 + overshoot) * r``
    for the sum of steps ``r``, clipped to the bounds; what clipping removes is
    removed from ``r`` too, so each step is linearised at the image the model saw.

    The linear steps land past the curved boundary by an unknown margin, so a
    fooled result is then searched back along its own perturbation ``d``:
    ``search_steps`` bisections (one batched forward each) find the smallest
    fooled ``t * d`` to within ``2 ** -search_steps`` of ``||d||``. Then, for
    ``projections`` rounds, the margin is linearised at that boundary point and the
    perturbation reaching its tangent hyperplane in the fewest norm units is
    searched the same way, kept where it is shorter (the direction DeepFool
    accumulated is rarely normal to the boundary it reached). The result is
    ``(1 + overshoot) * t * d``: the paper's overshoot, applied to the distance to
    the boundary (``t * d`` where that overshot point is not fooled).

    The whole batch is processed at once: one forward and ``candidates - 1``
    backward passes per iteration for all samples still active, and a sample
    leaves the active set as soon as it is misclassified, or as soon as all its
    gradients are zero (it cannot move). ``info["iterations"]``
    (``[B]`` int64) says how many linearisation steps each sample took.

    Unbounded (``eps`` is ``None`` unless given; then the result is projected onto
    the ball) and untargeted.

    Args:
        steps: iterations at most.
        overshoot: relative overshoot that pushes the result past the boundary.
        candidates: classes considered, the true class included (at least 2;
            capped at the number of classes).
        **common: ``eps`` (optional), ``norm`` (``"l2"`` or ``"linf"``), ``bounds``, ``seed``.

    Reference:
        Moosavi-Dezfooli, Fawzi, Frossard. DeepFool: a simple and accurate method to
        fool deep neural networks. CVPR 2016.
        Abdollahpourrostam, Abroshan, Moosavi-Dezfooli. Revisiting DeepFool:
        generalization and simplification. arXiv:2303.12481, 2023 (SuperDeepFool's
        projection onto the boundary's normal).
    """

    family = "deepfool"
    norms = ("l2", "linf")
    bounded = False
    targeted = False
    smoke_params = {"steps": 10}
    # Bisections of the final search: 8 forwards put the result within 0.4% of its length from the
    # boundary, well inside the default 2% overshoot; a class constant, not a parameter, since the
    # search only ever shortens a fooled result.
    search_steps = 8
    # Projection rounds (one forward and one backward each, plus a search): on the benchmark CNN one
    # takes the median L2 from 1.3% above ART's DeepFool to 1.3% below, three to 2.3% below at
    # about 20% more time; one keeps the attack well over 30 times faster than ART's.
    projections = 1

    def __init__(self, *, steps: int = 50, overshoot: float = 0.02, candidates: int = 10, **common):
        super().__init__(**common)
        owner = self.name
        self.steps = check_int(owner, "steps", steps, minimum=1)
        self.overshoot = check_number(owner, "overshoot", overshoot, minimum=0.0)
        self.candidates = check_int(owner, "candidates", candidates, minimum=2)

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None) -> tuple[Tensor, dict]:
        x_adv, fooled, iterations = self._linearised_steps(model, x, y)
        if fooled.any():
            rows = fooled.nonzero().squeeze(1)
            x_adv[rows] = self._back_to_boundary(model, x[rows], x_adv[rows], y[rows])
        return x_adv, {"iterations": iterations.cpu()}

    def _linearised_steps(self, model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """DeepFool's iterations: the clipped end points, which of them are fooled, and steps per sample."""
        low, high = self.bounds
        scale = 1.0 + self.overshoot
        total = torch.zeros_like(x)
        x_adv = x.clone()  # each sample's last evaluated point
        iterations = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        active = torch.arange(x.shape[0], device=x.device)
        runners_up = None
        with torch.enable_grad():
            for iteration in range(self.steps + 1):
                if iteration:
                    point = (x[active] + scale * total[active]).clamp_(low, high)
                    # Keep in r only what the bounds let through: an excess beyond a bound would
                    # silently absorb later steps in the other direction.
                    total[active] = (point - x[active]) / scale
                    x_adv[active] = point
                else:
                    point = x.clone()
                point.requires_grad_(True)
                logits = model(point)
                if runners_up is None:
                    count = min(self.candidates, logits.shape[1])
                    ranked = logits.detach().scatter(1, y[:, None], float("inf")).topk(count, dim=1).indices
                    runners_up = ranked[:, 1:]  # column 0 is y itself
                still = logits.detach().argmax(dim=1) == y[active]
                if iteration:
                    fooled[active[~still]] = True
                if iteration == self.steps or not still.any():
                    break
                rows, active = active, active[still]
                crossed = int((~still).sum())
                if crossed * runners_up.shape[1] > active.numel():
                    # Backward passes cost as much for a crossed row as for an active one:
                    # one forward of the active rows is cheaper than carrying the crossed ones.
                    point = point.detach()[still].requires_grad_(True)
                    logits = model(point)
                    rows, still = active, torch.ones(active.numel(), dtype=torch.bool, device=x.device)
                step = self._step(point, logits, y[rows], runners_up[rows], still)
                total[active] += step
                iterations[active] += 1
                # A sample whose gradients are all zero (masked, quantised) cannot move: it leaves now
                # instead of spending every remaining iteration on backward passes.
                moving = step.flatten(1).abs().amax(dim=1) > 0
                if not moving.all():
                    active = active[moving]
                    if active.numel() == 0:
                        break
        return x_adv, fooled, iterations

    def _back_to_boundary(self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor) -> Tensor:
        """Fooled ``x_adv`` moved back to ``(1 + overshoot)`` times the boundary's distance along a direction.

        The direction is first ``x_adv - x``; then each of ``projections`` rounds
        linearises the margin at the boundary point found and tries the
        perturbation that reaches that tangent hyperplane in the fewest norm units
        (SuperDeepFool's projection step), kept where its own boundary is nearer.
        """
        direction = x_adv - x
        with torch.no_grad():
            fraction = self._boundary_fraction(model, x, y, direction)
        size = norm_of(fraction.view(_column(x)) * direction, self.norm)
        for _ in range(self.projections):
            candidate = self._tangent_direction(model, x, y, x + fraction.view(_column(x)) * direction)
            with torch.no_grad():
                fooled = model(self._along(x, candidate, torch.ones_like(fraction))).argmax(dim=1) != y
                if not fooled.any():
                    break
                rows = fooled.nonzero().squeeze(1)
                candidate_fraction = self._boundary_fraction(model, x[rows], y[rows], candidate[rows])
                candidate_size = norm_of(candidate_fraction.view(_column(x)) * candidate[rows], self.norm)
                better = candidate_size < size[rows]
                rows, candidate_fraction = rows[better], candidate_fraction[better]
                direction[rows], fraction[rows] = candidate[rows], candidate_fraction
                size[rows] = candidate_size[better]
        with torch.no_grad():
            overshot = (fraction * (1.0 + self.overshoot)).clamp_(max=1.0)
            check = overshot > fraction
            if check.any():
                rows = check.nonzero().squeeze(1)
                fooled = model(self._along(x[rows], direction[rows], overshot[rows])).argmax(dim=1) != y[rows]
                overshot[rows] = torch.where(fooled, overshot[rows], fraction[rows])
        return self._along(x, direction, overshot)

    def _along(self, x: Tensor, direction: Tensor, fraction: Tensor) -> Tensor:
        # Rounding can put x + t * d an ulp outside the bounds that contain both ends.
        return (x + fraction.view(_column(x)) * direction).clamp_(*self.bounds)

    def _boundary_fraction(self, model: nn.Module, x: Tensor, y: Tensor, direction: Tensor) -> Tensor:
        """The smallest fooled fraction ``t`` of ``direction`` found by bisection (``t = 1`` is fooled, 0 not).

        Every point of the segment is inside the bounds (both ends are), so the norm scales with ``t``.
        """
        short = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        long = torch.ones_like(short)
        for _ in range(self.search_steps):
            middle = (short + long) / 2
            fooled = model(self._along(x, direction, middle)).argmax(dim=1) != y
            long = torch.where(fooled, middle, long)
            short = torch.where(fooled, short, middle)
        return long

    def _tangent_direction(self, model: nn.Module, x: Tensor, y: Tensor, boundary: Tensor) -> Tensor:
        """The perturbation from ``x`` to the margin's tangent hyperplane at ``boundary``, clipped to the bounds.

        With ``m = max_k f_k - f_y`` (positive just past the boundary) and ``w`` its
        gradient at ``boundary``, the linear margin at ``x`` is ``m - w . (boundary - x)``
        (negative); L2 closes it along ``w``, L-inf along ``sign(w)``.
        """
        with torch.enable_grad():
            point = boundary.detach().requires_grad_(True)
            logits = model(point)
            margin = logits.scatter(1, y[:, None], float("-inf")).amax(dim=1) - logits.gather(1, y[:, None]).squeeze(1)
            (normal,) = torch.autograd.grad(margin.sum(), point)
        low, high = self.bounds
        # From x, components that push a pixel at a bound further out would be clipped away.
        normal = normal.masked_fill_(((x <= low) & (normal < 0)) | ((x >= high) & (normal > 0)), 0.0)
        flat = normal.flatten(1)
        linear_at_x = margin.detach() - (flat * (boundary - x).flatten(1)).sum(dim=1)
        if self.norm == "l2":
            step = normal * (-linear_at_x / flat.square().sum(dim=1).clamp_min(1e-12)).view(_column(x))
        else:
            step = normal.sign() * (-linear_at_x / flat.abs().sum(dim=1).clamp_min(1e-12)).view(_column(x))
        # The linear model is only that: aim a little past the hyperplane so the search has a fooled end.
        return (x + (1.0 + _TANGENT_MARGIN) * step).clamp_(*self.bounds) - x

    def _step(self, point: Tensor, logits: Tensor, labels: Tensor, others: Tensor, keep: Tensor) -> Tensor:
        """The step to the nearest linearised boundary for the rows ``keep`` of ``point``.

        One backward pass per runner-up class, each for the whole batch at once
        (samples are independent, so the gradient of a sum gives every row's own).
        Gradient components that would push a pixel already at a bound further out
        are dropped before measuring distances: clipping would undo them, and
        keeping them makes every step fall short (ART's clipped DeepFool needs
        about three times as many iterations on MNIST).
        """
        low, high = self.bounds
        own = logits.gather(1, labels[:, None])
        differences = logits.gather(1, others) - own  # [A, C-1]: f_k - f_y, negative while not fooled
        gaps = differences.detach()[keep].abs()
        at_low, at_high = point.detach()[keep] <= low, point.detach()[keep] >= high
        best_distance = torch.full_like(gaps[:, 0], float("inf"))
        best_gap = torch.zeros_like(best_distance)
        best_normal = torch.zeros_like(at_low, dtype=point.dtype)
        last = differences.shape[1] - 1
        for column in range(differences.shape[1]):
            (normal,) = torch.autograd.grad(differences[:, column].sum(), point, retain_graph=column < last)
            normal = normal[keep]
            normal = normal.masked_fill_((at_low & (normal < 0)) | (at_high & (normal > 0)), 0.0)
            flat = normal.reshape(normal.shape[0], -1)
            size = flat.norm(p=2, dim=1) if self.norm == "l2" else flat.abs().sum(dim=1)
            distance = gaps[:, column] / size.clamp_min(1e-12)
            closer = distance < best_distance
            best_distance = torch.where(closer, distance, best_distance)
            best_gap = torch.where(closer, gaps[:, column], best_gap)
            best_normal[closer] = normal[closer]
        flat = best_normal.reshape(best_normal.shape[0], -1)
        shape = (-1,) + (1,) * (point.dim() - 1)
        if self.norm == "l2":
            size = flat.square().sum(dim=1).clamp_min(1e-12)
            return ((best_gap + 1e-4) / size).view(shape) * best_normal
        size = flat.abs().sum(dim=1).clamp_min(1e-12)
        return ((best_gap + 1e-4) / size).view(shape) * best_normal.sign()
