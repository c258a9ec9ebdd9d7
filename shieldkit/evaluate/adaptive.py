"""Adaptive-attack selection: what an attacker who knows the defence differentiates.

For each defence the runner attacks the deployed model as a naive evaluator would
(autograd through whatever the defence does), and, adaptively, a model chosen here
from the defence's declared capabilities:

| defence                               | adaptive target                                  |
| ------------------------------------- | ------------------------------------------------ |
| no defence, trainer                   | the model itself (naive = adaptive)              |
| differentiable transform/postprocess  | exact gradients (naive = adaptive) + EOT if random |
| non-differentiable                    | BPDA (identity backward), or its ``surrogate``   |
| randomised                            | Expectation over Transformation, ``eot`` draws   |
| detector                              | the classifier, detection judged on the result   |

A defence can ask for more with two optional hooks (a small protocol, no base
class needed):

- ``adaptive_attack()`` returns an attack name, ``(name, params)``, an
  ``Attack`` instance or a list of these, e.g. the latent-space attack for a
  GAN projection. Such an attack runs against the deployed ``DefendedModel``
  (it may read ``model.defense`` and ``model.model``), with the grid's ``eps``,
  ``norm`` and a per-chunk ``seed``.
- ``adaptive_view(deployed)`` returns the ``nn.Module`` to attack instead of the
  view chosen from the table above.

Reference:
    Athalye, Carlini, Wagner. Obfuscated Gradients Give a False Sense of Security. ICML 2018.
    Tramer, Carlini, Brendel, Madry. On Adaptive Attacks to Adversarial Example Defenses. NeurIPS 2020.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from shieldkit.defense import (
    Defense,
    DetectorDefense,
    PostprocessDefense,
    TrainerDefense,
    TransformDefense,
)


@dataclass
class Judgement:
    """How the deployed system handled adversarial images, per sample (CPU tensors)."""

    predictions: Tensor
    misclassified: Tensor
    detected: Tensor
    fooled: Tensor


@dataclass
class DefensePlan:
    """One defence of the grid, ready to attack.

    Attributes:
        label: the defence's name in tables (``"none"`` for no defence).
        kind: ``none``, ``transform``, ``postprocess``, ``detector`` or ``trainer``.
        defense: the defence object (``None`` for no defence).
        classifier: the classifier the defence protects (the fitted one for trainers).
        deployed: the model as deployed; what naive attacks and every judgement use.
        view: what adaptive gradient attacks differentiate; ``None`` when that is ``deployed``.
        view_description: how ``view`` was built, for the report.
        extra_attacks: the defence's own adaptive attacks (``adaptive_attack()``).
        randomized: the deployed model's output depends on randomness.
        eot: random draws averaged by ``view``.
    """

    label: str
    kind: str
    defense: Defense | None
    classifier: nn.Module
    deployed: nn.Module
    view: nn.Module | None = None
    view_description: str = "same as deployed"
    extra_attacks: list[Any] = field(default_factory=list)
    randomized: bool = False
    eot: int = 1

    @property
    def detector(self) -> DetectorDefense | None:
        return self.defense if isinstance(self.defense, DetectorDefense) else None

    @property
    def has_adaptive_stage(self) -> bool:
        return self.view is not None or bool(self.extra_attacks)

    def reseed(self, seed: int) -> None:
        """Fix the defence's randomness for one unit of work, so results do not depend on run order."""
        if self.defense is not None and self.randomized:
            self.defense.seed = int(seed)
            self.defense._generator = None  # rebuilt from the new seed on next use

    @torch.no_grad()
    def judge(self, x_adv: Tensor, y: Tensor, seed: int) -> Judgement:
        """Predictions and detections of the deployed system on ``x_adv`` (one seeded draw)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.reseed(seed)
            predictions = self.deployed(x_adv).argmax(dim=1).cpu()
        y = y.cpu()
        misclassified = predictions != y
        detector = self.detector
        if detector is not None:
            detected = detector.detect(self.classifier, x_adv).cpu()
        else:
            detected = torch.zeros_like(misclassified)
        return Judgement(predictions, misclassified, detected, misclassified & ~detected)


#: What suits defence families that do not (yet) say so themselves through the hooks above:
#: the gradient of their view and defence-specific attacks (used where registered and supporting the grid's norm).
KNOWN_ADAPTIVE: dict[str, dict[str, Any]] = {
    # Backpropagating through the unrolled projection is costly and its gradient weak; BPDA through
    # the projection (Athalye et al.) and the latent-space attack (Ilyas et al., L2 only) are the known breaks.
    "defense_gan": {"gradient": "bpda", "attacks": (("overpowered", {}),)},
    "inc": {"gradient": "bpda", "attacks": (("overpowered", {}),)},
}


def plan_defense(label: str, defense: Defense | None, model: nn.Module, *, eot: int = 8,
                 adaptive: bool = True, norm: str = "linf") -> DefensePlan:
    """Choose the deployed model and the adaptive attack target for one defence.

    Args:
        label: the defence's name in tables.
        defense: a defence (fitted already when it is a trainer or detector), or ``None``.
        model: the classifier (for trainers: the model ``fit`` returned).
        eot: random draws to average for randomised defences.
        adaptive: when ``False`` only the naive evaluation runs.
    """
    if defense is None:
        return DefensePlan(label, "none", None, model, model)
    if isinstance(defense, TrainerDefense):
        return DefensePlan(label, "trainer", defense, model, model, view_description="robust model (naive = adaptive)")
    if isinstance(defense, DetectorDefense):
        plan = DefensePlan(label, "detector", defense, model, model,
                           view_description="classifier; success = misclassified and not detected")
    elif isinstance(defense, (TransformDefense, PostprocessDefense)):
        deployed = defense.wrap(model)
        plan = DefensePlan(label, defense.kind, defense, model, deployed, randomized=bool(defense.randomized))
        gradient = KNOWN_ADAPTIVE.get(defense.family, {}).get("gradient") or choose_gradient(defense)
        plan.eot = eot if defense.randomized else 1
        if gradient != "exact" or plan.eot > 1:
            plan.view = deployed.attack_view(gradient=gradient, eot=plan.eot)
        plan.view_description = describe_view(gradient, plan.eot)
    else:
        raise TypeError(f"{label}: cannot evaluate a defence of kind {getattr(defense, 'kind', '?')!r}")
    if not adaptive:
        plan.view, plan.view_description = None, "naive only (adaptive=False)"
        return plan
    custom_view = getattr(defense, "adaptive_view", None)
    if callable(custom_view):
        plan.view = custom_view(plan.deployed)
        plan.view_description = f"{type(defense).__name__}.adaptive_view()"
    plan.extra_attacks = defense_attacks(defense, norm)
    if plan.extra_attacks:
        names = [getattr(a, "name", None) or (a if isinstance(a, str) else a[0]) for a in plan.extra_attacks]
        plan.view_description += f"; defence-specific: {', '.join(map(str, names))}"
    return plan


def choose_gradient(defense: TransformDefense | PostprocessDefense) -> str:
    """``exact`` for differentiable defences, ``surrogate`` when one is given, else ``bpda``."""
    if defense.differentiable:
        return "exact"
    if isinstance(defense, TransformDefense) and type(defense).surrogate is not TransformDefense.surrogate:
        return "surrogate"
    return "bpda"


def describe_view(gradient: str, eot: int) -> str:
    names = {"exact": "exact gradients", "bpda": "BPDA (identity backward)", "surrogate": "BPDA with its surrogate"}
    text = names[gradient]
    return f"{text} + EOT ({eot} draws)" if eot > 1 else text


def defense_attacks(defense: Defense, norm: str = "linf") -> list[Any]:
    """The defence's own adaptive attacks: its ``adaptive_attack()`` hook, else :data:`KNOWN_ADAPTIVE`."""
    hook = getattr(defense, "adaptive_attack", None)
    if callable(hook):
        found = hook()
        if found is None:
            return []
        return list(found) if isinstance(found, list) else [found]
    from shieldkit.registry import list_attacks

    available = set(list_attacks(norm=norm))
    known = KNOWN_ADAPTIVE.get(defense.family, {}).get("attacks", ())
    return [(name, dict(params)) for name, params in known
            if any(entry.split(".")[0] == name for entry in available)]
