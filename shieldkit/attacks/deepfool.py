"""DeepFool (Moosavi-Dezfooli et al. 2016), batched: the smallest step across a linearised boundary."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from shieldkit.attack import Attack
from shieldkit.validation import check_int, check_number


class DeepFool(Attack):
    """Minimal perturbation by repeatedly stepping to the nearest linearised decision boundary.

    At each iteration, for every sample still classified as ``y``, the logit
    differences ``f_k - f_y`` of the ``candidates - 1`` runner-up classes (the top
    classes of the clean image) are linearised; the step goes to the nearest of
    those hyperplanes in ``norm`` (L2: along ``w``; L-inf: along ``sign(w)``, the
    dual L1 norm measuring the distance). The total step ``r`` is applied as
    ``x + (1 + overshoot) * r``, clipped to the bounds.

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
    """

    family = "deepfool"
    norms = ("l2", "linf")
    bounded = False
    targeted = False
    smoke_params = {"steps": 10}

    def __init__(self, *, steps: int = 50, overshoot: float = 0.02, candidates: int = 10, **common):
        super().__init__(**common)
        owner = self.name
        self.steps = check_int(owner, "steps", steps, minimum=1)
        self.overshoot = check_number(owner, "overshoot", overshoot, minimum=0.0)
        self.candidates = check_int(owner, "candidates", candidates, minimum=2)

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None) -> tuple[Tensor, dict]:
        low, high = self.bounds
        scale = 1.0 + self.overshoot
        total = torch.zeros_like(x)
        iterations = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        active = torch.arange(x.shape[0], device=x.device)
        runners_up = None
        with torch.enable_grad():
            for iteration in range(self.steps + 1):
                point = (x[active] + scale * total[active]).clamp_(low, high) if iteration else x.clone()
                point.requires_grad_(True)
                logits = model(point)
                if runners_up is None:
                    count = min(self.candidates, logits.shape[1])
                    ranked = logits.detach().scatter(1, y[:, None], float("inf")).topk(count, dim=1).indices
                    runners_up = ranked[:, 1:]  # column 0 is y itself
                still = logits.detach().argmax(dim=1) == y[active]
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
        x_adv = (x + scale * total).clamp_(low, high)
        return x_adv, {"iterations": iterations.cpu()}

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
