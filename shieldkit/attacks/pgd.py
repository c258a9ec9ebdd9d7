"""Projected Gradient Descent (Madry et al. 2018) in L-inf and L2."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from shieldkit.attacks.noise import uniform_ball
from shieldkit.core.attack import Attack
from shieldkit.core.eot import eot_average
from shieldkit.core.losses import LOSSES, OBJECTIVES, fooled
from shieldkit.core.threat import linf_box, project
from shieldkit.core.validation import check_bool, check_choice, check_int, check_number


class PGD(Attack):
    """Iterated signed (L-inf) or normalised (L2) gradient steps, projected back onto the ball.

    Defaults follow torchattacks: 10 steps of ``eps / 4`` from a random start.
    Madry et al.'s MNIST setting is ``eps=0.3, steps=40, step_size=0.01``.

    Args:
        steps: gradient steps per restart.
        step_size: size of each step in ``norm``; ``None`` means ``eps / 4``.
        random_start: start from a uniform draw in the ball instead of ``x``.
        restarts: independent runs; each sample keeps its best (fooled, else the
            highest loss). Samples fooled by one run are not attacked again.
        loss: ``"ce"`` (cross-entropy), ``"margin"`` (Carlini-Wagner) or ``"dlr"``
            (Croce-Hein Difference of Logits Ratio).
        early_stop: stop updating a sample as soon as it is fooled (the smallest
            number of steps; its loss is not pushed further).
        eot: average the gradient over this many forward passes (Expectation over
            Transformation, for randomised models and defences).
        **common: ``eps``, ``norm`` (``"linf"`` or ``"l2"``), ``bounds``, ``seed``.

    Targeted: pass ``target=``; the attack then ascends the target's objective
    (e.g. descends the target's cross-entropy).

    Reference:
        Madry, Makelov, Schmidt, Tsipras, Vladu. Towards Deep Learning Models
        Resistant to Adversarial Attacks. ICLR 2018.
    """

    family = "pgd"
    norms = ("linf", "l2")
    randomized = True
    smoke_params = {"steps": 3}
    param_notes = {"step_size": "eps / 4"}

    def __init__(
        self,
        *,
        steps: int = 10,
        step_size: float | None = None,
        random_start: bool = True,
        restarts: int = 1,
        loss: str = "ce",
        early_stop: bool = False,
        eot: int = 1,
        **common,
    ):
        super().__init__(**common)
        owner = self.name
        self.steps = check_int(owner, "steps", steps, minimum=1)
        self.step_size = None if step_size is None else check_number(owner, "step_size", step_size, 0.0, strict=True)
        self.random_start = check_bool(owner, "random_start", random_start)
        self.restarts = check_int(owner, "restarts", restarts, minimum=1)
        self.loss = check_choice(owner, "loss", loss, LOSSES)
        self.early_stop = check_bool(owner, "early_stop", early_stop)
        self.eot = check_int(owner, "eot", eot, minimum=1)

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        targeted = target is not None
        labels = target if targeted else y
        if self.restarts == 1:
            return self._descend(model, x, labels, targeted)[0]
        objective = OBJECTIVES[self.loss]
        best = x.clone()
        best_value = torch.full((x.shape[0],), float("-inf"), dtype=x.dtype, device=x.device)
        done = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for _ in range(self.restarts):
            pending = (~done).nonzero().squeeze(1)
            if pending.numel() == 0:
                break
            x_run, known_fooled = self._descend(model, x[pending], labels[pending], targeted)
            with torch.no_grad():
                logits = model(x_run)
                value = objective(logits, labels[pending], targeted)
                hit = fooled(logits, labels[pending], targeted) | known_fooled
            better = hit | (value > best_value[pending])
            best[pending[better]] = x_run[better]
            best_value[pending[better]] = value[better]
            done[pending[hit]] = True
        return best

    def _descend(self, model: nn.Module, x: Tensor, labels: Tensor, targeted: bool) -> tuple[Tensor, Tensor]:
        """One PGD run; returns the last iterate and which samples early stopping froze as fooled."""
        eps, norm = self.eps, self.norm
        step_size = self.step_size if self.step_size is not None else eps / 4
        objective = OBJECTIVES[self.loss]
        low, high = self.bounds
        frozen = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        if eps == 0:
            return x.clone(), frozen
        x_adv = self.project(x + uniform_ball(x, norm, eps), x) if self.random_start else x.clone()
        if norm == "linf":  # the ball and the bounds in one box, computed once
            lower, upper = linf_box(x, eps, self.bounds)
        result = x_adv.clone() if self.early_stop else None
        active = torch.arange(x.shape[0], device=x.device) if self.early_stop else None
        x_origin = x
        with torch.enable_grad():
            for _ in range(self.steps):
                x_adv.requires_grad_(True)
                logits = model(x_adv)
                gradient = None
                if self.eot == 1:
                    (gradient,) = torch.autograd.grad(objective(logits, labels, targeted).sum(), x_adv)
                else:
                    logits, gradient = self._eot_gradient(model, x_adv, logits, labels, targeted, objective)
                x_adv = x_adv.detach()
                if self.early_stop:
                    hit = fooled(logits.detach(), labels, targeted)
                    if hit.any():
                        result[active[hit]] = x_adv[hit]
                        frozen[active[hit]] = True
                        keep = ~hit
                        active, x_adv, gradient, labels = active[keep], x_adv[keep], gradient[keep], labels[keep]
                        x_origin = x_origin[keep]
                        if norm == "linf":
                            lower, upper = lower[keep], upper[keep]
                        if active.numel() == 0:
                            break
                if norm == "linf":
                    x_adv = x_adv.add_(gradient.sign_(), alpha=step_size).clamp_(min=lower, max=upper)
                else:
                    flat = gradient.reshape(gradient.shape[0], -1)
                    step = flat / flat.norm(p=2, dim=1, keepdim=True).clamp_min_(1e-12)
                    x_adv = x_adv.add_(step.view_as(x_adv), alpha=step_size)
                    x_adv = (x_origin + project(x_adv - x_origin, "l2", eps)).clamp_(low, high)
        if self.early_stop:
            if active.numel():
                result[active] = x_adv
            return result, frozen
        return x_adv, frozen

    def _eot_gradient(self, model, x_adv, logits, labels, targeted, objective) -> tuple[Tensor, Tensor]:
        """Gradient and logits averaged over ``eot`` forward passes (the first one already made)."""

        def one_draw(index: int) -> tuple[Tensor, Tensor]:
            drawn = logits if index == 0 else model(x_adv)
            (gradient,) = torch.autograd.grad(objective(drawn, labels, targeted).sum(), x_adv)
            return drawn.detach(), gradient

        return eot_average(one_draw, self.eot)
