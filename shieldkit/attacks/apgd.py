"""Auto-PGD (Croce & Hein, ICML 2020): PGD with momentum and a step size that adapts per sample.

The core, ``auto_pgd``, is shared with the targeted variant (``apgd_targeted.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn

from shieldkit.core.attack import Attack
from shieldkit.core.losses import cross_entropy, dlr, margin, targeted_dlr
from shieldkit.core.threat import linf_box, project
from shieldkit.core.validation import check_choice, check_int, check_number

APGD_LOSSES = ("ce", "dlr")


def step_checkpoints(steps: int) -> tuple[int, ...]:
    """The iterations ``w_j = ceil(p_j * steps)`` at which APGD may halve a sample's step.

    ``p_0 = 0``, ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``: checkpoints
    come closer together as the run goes on. For 100 steps: 22, 41, 57, 70, 80, 87, 93, 99.
    """
    previous, current = 0.0, 0.22
    checkpoints = []
    while current <= 1.0:
        # The tolerance keeps float error (0.22 * 100 = 22.000000000000004) from adding a step.
        checkpoint = math.ceil(current * steps - 1e-9)
        if checkpoint >= 1 and (not checkpoints or checkpoint > checkpoints[-1]):
            checkpoints.append(checkpoint)
        previous, current = current, current + max(current - previous - 0.03, 0.06)
    return tuple(checkpoints)


@dataclass(frozen=True)
class APGDSettings:
    """One APGD run's budget and schedule.

    Attributes:
        eps, norm, bounds: the threat model (``norm`` is ``"linf"`` or ``"l2"``).
        steps: iterations (one forward and one backward pass each, the last without backward).
        rho: a sample's step is halved at a checkpoint when its loss rose in fewer than
            ``rho`` of the steps since the previous one.
        momentum: weight ``alpha`` of the new step against the previous one.
    """

    eps: float
    norm: str
    bounds: tuple[float, float]
    steps: int
    rho: float = 0.75
    momentum: float = 0.75


@dataclass
class APGDOutcome:
    """What one APGD run gives per sample.

    Attributes:
        x_adv: the first iterate that fooled the model, else the iterate of highest loss.
        fooled: ``[B]`` bool, ``x_adv`` fools the model (by the run's success criterion).
        margin: ``[B]`` Carlini-Wagner margin of that criterion at ``x_adv``: positive when
            fooled, otherwise how far from it (comparable across runs with other losses or targets).
        steps: ``[B]`` int64, iterations the sample took (fewer when it was fooled early).
    """

    x_adv: Tensor
    fooled: Tensor
    margin: Tensor
    steps: Tensor


def success_and_margin(logits: Tensor, y: Tensor, target: Tensor | None) -> tuple[Tensor, Tensor]:
    """``(fooled, margin)``: fooled means predicting ``target`` if given, else leaving ``y``."""
    if target is not None:
        return logits.argmax(dim=1) == target, margin(logits, target, True)
    return logits.argmax(dim=1) != y, margin(logits, y, False)


@dataclass
class _Front:
    """The samples of a run still unbroken, one row each; ``keep`` drops the rest from every field."""

    rows: Tensor  # positions in the run's batch
    x: Tensor
    lower: Tensor | None  # L-inf: the ball and the bounds as one box
    upper: Tensor | None
    y: Tensor
    target: Tensor | None  # for the loss
    success_target: Tensor | None  # for the success criterion
    x_cur: Tensor
    x_prev: Tensor
    grad: Tensor
    loss_prev: Tensor
    x_best: Tensor
    grad_best: Tensor
    loss_best: Tensor
    margin_best: Tensor
    step: Tensor
    increases: Tensor
    loss_at_check: Tensor
    reduced_at_check: Tensor

    def keep(self, mask: Tensor) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if value is not None:
                setattr(self, item.name, value[mask])


def auto_pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    settings: APGDSettings,
    *,
    loss: str = "ce",
    target: Tensor | None = None,
    targeted_success: bool = False,
) -> APGDOutcome:
    """One APGD run from a random start in the ball, on every sample of ``x``.

    Each iteration takes a step of the sample's own size along the sign (L-inf) or the
    unit direction (L2) of the loss gradient, projects it, and mixes it with the
    previous step (momentum ``alpha``). At each checkpoint (``step_checkpoints``) a
    sample's step is halved and it restarts from its best point when its loss rose in
    fewer than ``rho`` of the steps since the last checkpoint, or when neither its step
    nor its best loss changed since then. The initial step is ``2 * eps``.

    A sample leaves the batch at the first iterate that fools the model, so later
    iterations forward only the samples still unbroken.

    Args:
        loss: ``"ce"`` or ``"dlr"``. With ``target``: the target's cross-entropy
            descended, or the targeted DLR of the true class against the target.
        target: target classes ``[B]`` for the loss, or ``None`` (untargeted loss).
        targeted_success: success means predicting ``target`` (a targeted attack);
            ``False``: leaving ``y`` (APGD-T counts untargeted success).
    """
    eps, norm, alpha = settings.eps, settings.norm, settings.momentum
    low, high = settings.bounds
    size = x.shape[0]
    success_target = target if targeted_success else None
    if loss == "dlr":
        objective = (lambda z, f: dlr(z, f.y, False)) if target is None else (lambda z, f: targeted_dlr(z, f.y, f.target))
    else:
        objective = (lambda z, f: cross_entropy(z, f.y, False)) if target is None else (
            lambda z, f: cross_entropy(z, f.target, True))

    def evaluate(front: _Front, point: Tensor, backward: bool) -> tuple[Tensor, Tensor, Tensor | None]:
        if not backward:
            with torch.no_grad():
                logits = model(point)
                return logits, objective(logits, front), None
        point = point.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(point)
            values = objective(logits, front)
            (gradient,) = torch.autograd.grad(values.sum(), point)
        return logits.detach(), values.detach(), gradient

    def direction(gradient: Tensor) -> Tensor:
        if norm == "linf":
            return gradient.sign()
        flat = gradient.flatten(1)
        return (flat / flat.norm(p=2, dim=1, keepdim=True).clamp_min(1e-12)).view_as(gradient)

    def projected(front: _Front, point: Tensor) -> Tensor:
        if norm == "linf":
            return point.clamp_(min=front.lower, max=front.upper)
        return (front.x + project(point - front.x, "l2", eps)).clamp_(low, high)

    # The start: a point on the ball's surface (L-inf: a random corner direction scaled so its largest
    # pixel change is eps; L2: a random direction of length eps), clipped to the bounds.
    if norm == "linf":
        noise = torch.rand_like(x).mul_(2).sub_(1)
        noise = noise / noise.flatten(1).abs().amax(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
    else:
        noise = torch.randn_like(x)
        noise = noise / noise.flatten(1).norm(p=2, dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
    start = (x + eps * noise).clamp_(low, high)
    lower = upper = None
    if norm == "linf":
        lower, upper = linf_box(x, eps, (low, high))
        start = start.clamp_(min=lower, max=upper)  # float error can put x + eps * noise an ulp outside

    result_x = start.clone()
    result_fooled = torch.zeros(size, dtype=torch.bool, device=x.device)
    result_margin = torch.empty(size, dtype=x.dtype, device=x.device)
    result_steps = torch.zeros(size, dtype=torch.long, device=x.device)
    empty = torch.zeros(size, dtype=x.dtype, device=x.device)
    front = _Front(
        rows=torch.arange(size, device=x.device), x=x, lower=lower, upper=upper, y=y, target=target,
        success_target=success_target, x_cur=start, x_prev=start, grad=empty, loss_prev=empty, x_best=start,
        grad_best=empty, loss_best=empty, margin_best=empty, step=torch.full_like(empty, 2 * eps),
        increases=torch.zeros(size, dtype=torch.long, device=x.device), loss_at_check=empty,
        reduced_at_check=torch.zeros(size, dtype=torch.bool, device=x.device),
    )
    logits, values, gradient = evaluate(front, start, backward=True)
    hit, closeness = success_and_margin(logits, y, success_target)
    result_margin.copy_(closeness)
    front.grad = front.grad_best = gradient
    front.loss_prev = front.loss_best = front.loss_at_check = values
    front.margin_best = closeness

    def retire(hit: Tensor, point: Tensor, closeness: Tensor, iteration: int) -> None:
        rows = front.rows[hit]
        result_x[rows] = point[hit]
        result_fooled[rows] = True
        result_margin[rows] = closeness[hit]
        result_steps[rows] = iteration
        front.keep(~hit)

    if hit.any():
        retire(hit, start, closeness, 0)
    checkpoints = set(step_checkpoints(settings.steps))
    last_checkpoint = 0
    for iteration in range(1, settings.steps + 1):
        if front.rows.numel() == 0:
            break
        shape = (-1,) + (1,) * (x.dim() - 1)
        step = front.step.view(shape)
        candidate = projected(front, front.x_cur + step * direction(front.grad))
        if iteration > 1:  # the first step has no previous one to carry momentum from
            candidate = projected(
                front, front.x_cur + alpha * (candidate - front.x_cur) + (1 - alpha) * (front.x_cur - front.x_prev))
        front.x_prev, front.x_cur = front.x_cur, candidate
        # The last iterate's gradient would never be used: a forward pass is enough.
        logits, values, gradient = evaluate(front, candidate, backward=iteration < settings.steps)
        if gradient is not None:
            front.grad = gradient
        hit, closeness = success_and_margin(logits, front.y, front.success_target)
        front.increases += values > front.loss_prev
        front.loss_prev = values
        better = values > front.loss_best
        if better.any():
            front.x_best = torch.where(better.view(shape), candidate, front.x_best)
            if gradient is not None:
                front.grad_best = torch.where(better.view(shape), gradient, front.grad_best)
            front.loss_best = torch.where(better, values, front.loss_best)
            front.margin_best = torch.where(better, closeness, front.margin_best)
        if hit.any():
            retire(hit, candidate, closeness, iteration)
        if iteration in checkpoints and front.rows.numel():
            window = iteration - last_checkpoint
            stalled = front.increases < settings.rho * window
            unchanged = ~front.reduced_at_check & (front.loss_at_check >= front.loss_best)
            halve = stalled | unchanged
            if halve.any():
                front.step = torch.where(halve, front.step / 2, front.step)
                front.x_cur = torch.where(halve.view(shape), front.x_best, front.x_cur)
                front.grad = torch.where(halve.view(shape), front.grad_best, front.grad)
                front.loss_prev = torch.where(halve, front.loss_best, front.loss_prev)
            front.reduced_at_check = halve
            front.loss_at_check = front.loss_best
            front.increases = torch.zeros_like(front.increases)
            last_checkpoint = iteration
    if front.rows.numel():
        result_x[front.rows] = front.x_best
        result_margin[front.rows] = front.margin_best
        result_steps[front.rows] = settings.steps
    return APGDOutcome(result_x, result_fooled, result_margin, result_steps)


def clean_check(model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """One forward pass on the clean images: ``(logits, fooled, margin)``; a sample fooled already is not attacked."""
    with torch.no_grad():
        logits = model(x)
    fooled, closeness = success_and_margin(logits, y, target)
    return logits, fooled, closeness


def keep_better(best_x: Tensor, best_margin: Tensor, done: Tensor, pending: Tensor, outcome: APGDOutcome,
                steps_taken: Tensor) -> None:
    """Merge one run on the rows ``pending`` into the running best (fooled wins, else the larger margin)."""
    better = outcome.fooled | (outcome.margin > best_margin[pending])
    best_x[pending[better]] = outcome.x_adv[better]
    best_margin[pending[better]] = outcome.margin[better]
    done[pending[outcome.fooled]] = True
    steps_taken[pending] += outcome.steps


class APGD(Attack):
    """Auto-PGD: PGD with momentum and a per-sample step size halved when progress stalls.

    Starts from a random point on the ball's surface with step ``2 * eps``; each
    iteration mixes the new projected step with the previous one (momentum 0.75).
    At the checkpoints ``w_j = ceil(p_j * steps)`` (``p_0 = 0``, ``p_1 = 0.22``,
    ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``) a sample's step is halved,
    and it restarts from its best point, when its loss rose in fewer than ``rho``
    of the steps since the last checkpoint or when neither its step nor its best
    loss changed since then. Restarts run only on the samples still unbroken and
    each sample keeps its best point.

    Built for evaluation: a sample leaves the batch at the first iterate that fools
    the model (one forward pass on the clean images first drops those already
    fooled), so the cost falls as samples break; each iteration is one forward and
    one backward pass of the unbroken samples (the last iteration forward only).
    ``info["steps"]`` (``[B]`` int64) counts each sample's iterations over all restarts.

    Args:
        steps: iterations per restart (AutoAttack: 100).
        restarts: runs from new random starts on the samples still unbroken.
        loss: ``"ce"`` (cross-entropy) or ``"dlr"`` (Difference of Logits Ratio,
            invariant to the logits' scale; needs 3 classes, 4 when targeted).
        rho: the share of loss increases between checkpoints below which the step is halved.
        **common: ``eps``, ``norm`` (``"linf"`` or ``"l2"``), ``bounds``, ``seed``.

    Targeted: pass ``target=``; success is predicting the target, the loss is the
    target's cross-entropy (descended) or the targeted DLR of the true class
    against the target.

    Reference:
        Croce, Hein. Reliable evaluation of adversarial robustness with an ensemble of
        diverse parameter-free attacks. ICML 2020.
    """

    family = "apgd"
    norms = ("linf", "l2")
    randomized = True
    smoke_params = {"steps": 5}

    def __init__(self, *, steps: int = 100, restarts: int = 1, loss: str = "ce", rho: float = 0.75, **common):
        super().__init__(**common)
        owner = self.name
        self.steps = check_int(owner, "steps", steps, minimum=1)
        self.restarts = check_int(owner, "restarts", restarts, minimum=1)
        self.loss = check_choice(owner, "loss", loss, APGD_LOSSES)
        self.rho = check_number(owner, "rho", rho, 0.0, 1.0, strict=True)

    def settings(self) -> APGDSettings:
        """The run settings this attack's parameters give."""
        return APGDSettings(eps=self.eps, norm=self.norm, bounds=self.bounds, steps=self.steps, rho=self.rho)

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None) -> tuple[Tensor, dict]:
        _, done, best_margin = clean_check(model, x, y, target)
        best_x = x.clone()
        steps_taken = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        if self.eps == 0:
            return best_x, {"steps": steps_taken.cpu()}
        settings = self.settings()
        for _ in range(self.restarts):
            pending = (~done).nonzero().squeeze(1)
            if pending.numel() == 0:
                break
            outcome = auto_pgd(model, x[pending], y[pending], settings, loss=self.loss,
                               target=None if target is None else target[pending],
                               targeted_success=target is not None)
            keep_better(best_x, best_margin, done, pending, outcome, steps_taken)
        return best_x, {"steps": steps_taken.cpu()}
