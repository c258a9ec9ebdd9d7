"""APGD-T (Croce & Hein, ICML 2020): targeted DLR Auto-PGD towards each of the top-k wrong classes."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from shieldkit.attacks.apgd import APGDOutcome, APGDSettings, auto_pgd, clean_check, keep_better
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

    AutoAttack runs the targets one after another, so once most samples are broken
    each run forwards a small batch: on a GPU most of the device idles. With
    ``batch_rows``, the runs of several targets go together in one batch of at most
    that many rows (a sample and a target per row; each sample keeps its best row,
    fooled first), so the batch stays full while samples break. Every sample still
    gets every target's run, so the attack is as strong; what it costs is the runs
    of later targets on samples an earlier target in the same batch breaks, free
    where the device has spare rows. The evaluation sets it to its chunk size on a
    GPU and leaves it off on a CPU, where a batch's cost grows with its rows.

    Args:
        steps: iterations per run (AutoAttack: 100).
        restarts: runs per target class.
        target_classes: wrong classes tried per sample (AutoAttack: 9); capped at
            the number of classes minus one.
        rho: the step-halving threshold of APGD.
        batch_rows: rows (sample x target) one APGD run may forward at once, to run several targets
            together; ``None``: one target at a time, as AutoAttack.
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
                 batch_rows: int | None = None, **common):
        super().__init__(**common)
        owner = self.name
        self.steps = check_int(owner, "steps", steps, minimum=1)
        self.restarts = check_int(owner, "restarts", restarts, minimum=1)
        self.target_classes = check_int(owner, "target_classes", target_classes, minimum=1)
        self.rho = check_number(owner, "rho", rho, 0.0, 1.0, strict=True)
        self.batch_rows = None if batch_rows is None else check_int(owner, "batch_rows", batch_rows, minimum=1)

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None) -> tuple[Tensor, dict]:
        logits, done, best_margin = clean_check(model, x, y, None)
        best_x = x.clone()
        steps_taken = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        if self.eps == 0:
            return best_x, {"steps": steps_taken.cpu()}
        count = min(self.target_classes, logits.shape[1] - 1)
        targets = logits.scatter(1, y[:, None], float("-inf")).topk(count, dim=1).indices
        settings = APGDSettings(eps=self.eps, norm=self.norm, bounds=self.bounds, steps=self.steps, rho=self.rho)
        rank = 0
        while rank < count:
            unbroken = int((~done).sum())
            if unbroken == 0:
                break
            together = min(count - rank, max(1, (self.batch_rows or 0) // unbroken))  # targets in one batch
            for _ in range(self.restarts):
                pending = (~done).nonzero().squeeze(1)
                if pending.numel() == 0:
                    break
                rows = pending.repeat(together)  # target-major: every pending sample once per target
                row_targets = targets[pending, rank:rank + together].t().reshape(-1)
                outcome = auto_pgd(model, x[rows], y[rows], settings, loss="dlr", target=row_targets,
                                   targeted_success=False)
                keep_better(best_x, best_margin, done, pending, best_row(outcome, together), steps_taken)
            rank += together
        return best_x, {"steps": steps_taken.cpu()}


def best_row(outcome: APGDOutcome, together: int) -> APGDOutcome:
    """Per sample, the best of its ``together`` target-major rows (a fooled one first, else the largest
    margin); its steps are the sum over the rows."""
    if together == 1:
        return outcome
    count = outcome.fooled.shape[0] // together
    score = outcome.margin.view(together, count).masked_fill(outcome.fooled.view(together, count), float("inf"))
    chosen = score.argmax(dim=0) * count + torch.arange(count, device=score.device)
    return APGDOutcome(x_adv=outcome.x_adv[chosen], fooled=outcome.fooled[chosen], margin=outcome.margin[chosen],
                       steps=outcome.steps.view(together, count).sum(dim=0))
