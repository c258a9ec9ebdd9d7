"""APGD-T (Croce & Hein, ICML 2020): targeted DLR Auto-PGD towards each of the top-k wrong classes."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from shieldkit.attacks.apgd import APGDSettings, auto_pgd, clean_check, keep_better
from shieldkit.core.attack import Attack
from shieldkit.core.validation import check_int, check_number


class APGDTargeted(Attack):
    """Untargeted attack made of targeted APGD runs: one per likely wrong class.

    For each sample the targets are its ``target_classes`` most likely wrong
    classes on the clean image, in decreasing order of their logits. Run ``r``
    attacks the samples still unbroken with APGD (``apgd.auto_pgd``) ascending the
    targeted DLR loss ``(z_t - z_y) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` towards the
    ``r``-th target; any misclassification counts as success, as in AutoAttack,
    where this is the second attack. Pulling towards one class at a time finds
    points that the untargeted loss, dominated by the nearest class, misses.

    The cost is at most ``target_classes * restarts`` APGD runs, each only on the
    samples no earlier run broke. ``info["steps"]`` counts each sample's
    iterations over all runs.

    Args:
        steps: iterations per run (AutoAttack: 100).
        restarts: runs per target class.
        target_classes: wrong classes tried per sample (AutoAttack: 9); capped at
            the number of classes minus one.
        rho: the step-halving threshold of APGD.
        **common: ``eps``, ``norm`` (``"linf"`` or ``"l2"``), ``bounds``, ``seed``.

    Needs a model with at least 4 classes (the DLR loss's denominator).

    Reference:
        Croce, Hein. Reliable evaluation of adversarial robustness with an ensemble of
        diverse parameter-free attacks. ICML 2020.
    """

    family = "apgd_t"
    norms = ("linf", "l2")
    targeted = False
    randomized = True
    smoke_params = {"steps": 4, "target_classes": 2}

    def __init__(self, *, steps: int = 100, restarts: int = 1, target_classes: int = 9, rho: float = 0.75,
                 **common):
        super().__init__(**common)
        owner = self.name
        self.steps = check_int(owner, "steps", steps, minimum=1)
        self.restarts = check_int(owner, "restarts", restarts, minimum=1)
        self.target_classes = check_int(owner, "target_classes", target_classes, minimum=1)
        self.rho = check_number(owner, "rho", rho, 0.0, 1.0, strict=True)

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None) -> tuple[Tensor, dict]:
        logits, done, best_margin = clean_check(model, x, y, None)
        best_x = x.clone()
        steps_taken = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        if self.eps == 0:
            return best_x, {"steps": steps_taken.cpu()}
        count = min(self.target_classes, logits.shape[1] - 1)
        targets = logits.scatter(1, y[:, None], float("-inf")).topk(count, dim=1).indices
        settings = APGDSettings(eps=self.eps, norm=self.norm, bounds=self.bounds, steps=self.steps, rho=self.rho)
        for rank in range(count):
            for _ in range(self.restarts):
                pending = (~done).nonzero().squeeze(1)
                if pending.numel() == 0:
                    return best_x, {"steps": steps_taken.cpu()}
                outcome = auto_pgd(model, x[pending], y[pending], settings, loss="dlr",
                                   target=targets[pending, rank], targeted_success=False)
                keep_better(best_x, best_margin, done, pending, outcome, steps_taken)
        return best_x, {"steps": steps_taken.cpu()}
