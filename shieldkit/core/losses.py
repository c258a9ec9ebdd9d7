"""Per-sample objectives on logits, all oriented so that the attacker *ascends* them.

Untargeted objectives grow as the true class ``labels`` loses; targeted ones grow
as the target class ``labels`` wins. Each maps logits ``[B, K]`` and labels ``[B]``
to ``[B]``.

:func:`margin` is shieldkit's one margin (attacks, DeepFool, the diagnosis, the
masking checks and the latent attacks all use it). Its sign convention: **positive
once the attack has succeeded** (another class beats ``labels``, or the target
``labels`` beats every other class), negative while it has not, so "how far from
being fooled" is ``-margin``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from shieldkit.core.errors import InvalidInputError

LOSSES = ("ce", "margin", "dlr")

Objective = Callable[[Tensor, Tensor, bool], Tensor]


def cross_entropy(logits: Tensor, labels: Tensor, targeted: bool) -> Tensor:
    """Cross-entropy of ``labels``: ascended when untargeted, descended (negated) when targeted."""
    loss = F.cross_entropy(logits, labels, reduction="none")
    return -loss if targeted else loss


def _label_and_best_other(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """The logit of ``labels`` and the largest logit of any other class, each ``[B]``."""
    own = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf"))
    return own, others.amax(dim=1)


def margin(logits: Tensor, labels: Tensor, targeted: bool = False) -> Tensor:
    """Carlini-Wagner margin: ``max_{j != y} z_j - z_y`` (untargeted), ``z_t - max_{j != t} z_j`` (targeted).

    Positive once the attack has succeeded (the module docstring's sign convention).

    Reference:
        Carlini, Wagner. Towards Evaluating the Robustness of Neural Networks. IEEE S&P 2017.
    """
    own, best_other = _label_and_best_other(logits, labels)
    return own - best_other if targeted else best_other - own


def dlr(logits: Tensor, labels: Tensor, targeted: bool) -> Tensor:
    """Difference of Logits Ratio, invariant to shifting and rescaling the logits.

    Untargeted: ``-(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3)``; targeted:
    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` with ``y`` the model's current
    top class other than the target and ``pi`` the logits sorted in decreasing order.

    Reference:
        Croce, Hein. Reliable evaluation of adversarial robustness with an ensemble of
        diverse parameter-free attacks. ICML 2020.
    """
    num_classes = logits.shape[1]
    needed = 4 if targeted else 3
    if num_classes < needed:
        kind = "targeted" if targeted else "untargeted"
        raise InvalidInputError(f"loss='dlr' ({kind}) needs a model with at least {needed} classes, got {num_classes}")
    ordered = logits.sort(dim=1, descending=True).values
    own, best_other = _label_and_best_other(logits, labels)
    if targeted:
        scale = ordered[:, 0] - 0.5 * (ordered[:, 2] + ordered[:, 3]) + 1e-12
        return (own - best_other) / scale
    scale = ordered[:, 0] - ordered[:, 2] + 1e-12
    return (best_other - own) / scale


OBJECTIVES: dict[str, Objective] = {"ce": cross_entropy, "margin": margin, "dlr": dlr}


def fooled(logits: Tensor, labels: Tensor, targeted: bool) -> Tensor:
    """``[B]`` bool: the prediction reached the target (targeted) or left ``labels`` (untargeted)."""
    predictions = logits.argmax(dim=1)
    return predictions == labels if targeted else predictions != labels



def targeted_dlr(logits: Tensor, labels: Tensor, target: Tensor) -> Tensor:
    """Croce and Hein's targeted DLR against the true class: ``(z_t - z_y) / (z_pi1 - (z_pi3 + z_pi4) / 2)``.

    Ascended by an attacker that pulls the true class ``labels`` down towards the
    ``target`` (APGD-T). Unlike ``dlr(..., targeted=True)``, which compares the
    target with the best other class, it needs the true labels as well.

    Reference:
        Croce, Hein. Reliable evaluation of adversarial robustness with an ensemble of
        diverse parameter-free attacks. ICML 2020.
    """
    num_classes = logits.shape[1]
    if num_classes < 4:
        raise InvalidInputError(f"the targeted DLR loss needs a model with at least 4 classes, got {num_classes}")
    ordered = logits.sort(dim=1, descending=True).values
    own = logits.gather(1, labels[:, None]).squeeze(1)
    wanted = logits.gather(1, target[:, None]).squeeze(1)
    scale = ordered[:, 0] - 0.5 * (ordered[:, 2] + ordered[:, 3]) + 1e-12
    return (wanted - own) / scale
