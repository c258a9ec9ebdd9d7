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

A defence declares what its adaptive evaluation needs on the :class:`~shieldkit.Defense`
base class (documented there; the defaults suit most defences):

- ``adaptive_gradient``: ``"exact"``, ``"bpda"`` or ``"surrogate"`` instead of the
  choice from the table above (Defense-GAN asks for BPDA).
- ``adaptive_attacks`` / ``adaptive_attack()``: its own attacks (names,
  ``(name, params)`` or ``Attack`` instances), e.g. the latent-space attack for a
  GAN projection. They run against the deployed ``DefendedModel`` (they may read
  ``model.defense`` and ``model.model``), with the grid's ``eps``, ``norm`` and a
  per-chunk ``seed``; registered ones that do not support the norm are left out.
- ``adaptive_view(deployed)``: the ``nn.Module`` to attack instead of the view
  chosen from the table above.

Reference:
    Athalye, Carlini, Wagner. Obfuscated Gradients Give a False Sense of Security. ICML 2018.
    Tramer, Carlini, Brendel, Madry. On Adaptive Attacks to Adversarial Example Defenses. NeurIPS 2020.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from shieldkit.core.defense import (
    Defense,
    DetectorDefense,
    PostprocessDefense,
    TrainerDefense,
    TransformDefense,
)
from shieldkit.core.seeding import seeded


@dataclass
class Judgement:
    """How the deployed system handled images, per sample (CPU tensors), over the plan's judging draws.

    A deterministic model is judged on one forward (``draws == 1``). A randomised one on ``draws`` fresh
    forwards, split in two halves: ``selected`` counts the draws of the first half the system survived (a correct
    prediction, or a detection), ``judged`` those of the second. The summary picks each sample's worst point by
    its first half and reports that point's second half, so the figure is not biased low by the pick.

    Attributes:
        predictions: the most frequent prediction over the draws.
        misclassified: on most draws; detected: by the detector.
        fooled: on every draw (for one draw: misclassified and not detected), what the cascade drops.
        selected, judged: draws survived per half (``None`` for one draw).
        draws: the forwards judged.
    """

    predictions: Tensor
    misclassified: Tensor
    detected: Tensor
    fooled: Tensor
    selected: Tensor | None = None
    judged: Tensor | None = None
    draws: int = 1

    @property
    def survival(self) -> Tensor:
        """Per sample, the share of draws the system survived (its expected accuracy there)."""
        if self.selected is None:
            return (~self.fooled).float()
        return (self.selected + self.judged).float() / self.draws


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
        draws: forwards each judgement of the deployed system takes (1 for a deterministic model; for a
            randomised one, chosen from the measured variance of its prediction, see
            :func:`shieldkit.evaluation.judging.judging_draws`).
        remedies: the escalations the diagnosis chose (:func:`shieldkit.escalation.plan_remedies`),
            attacked in the adaptive stage through their own views of the attack target.
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
    remedies: list[Any] = field(default_factory=list)
    draws: int = 1

    @property
    def attack_target(self) -> nn.Module:
        """What gradient attacks differentiate adaptively: the view, or the deployed model when there is none."""
        return self.view if self.view is not None else self.deployed

    @property
    def detector(self) -> DetectorDefense | None:
        return self.defense if isinstance(self.defense, DetectorDefense) else None

    @property
    def has_adaptive_stage(self) -> bool:
        return self.view is not None or bool(self.extra_attacks) or bool(self.remedies)

    def reseed(self, seed: int) -> None:
        """Fix the defence's randomness for one unit of work, so results do not depend on run order."""
        if self.defense is not None and self.randomized:
            self.defense.reseed(int(seed))

    @contextlib.contextmanager
    def seeded(self, seed: int) -> Iterator[None]:
        """torch's RNG (forked, so the caller's is untouched) and the defence's, both seeded with ``seed``."""
        with seeded(seed):
            self.reseed(seed)
            yield

    @torch.no_grad()
    def judge(self, x_adv: Tensor, y: Tensor, seed: int) -> Judgement:
        """Predictions and detections of the deployed system on ``x_adv``, over :attr:`draws` seeded forwards."""
        with self.seeded(seed):
            predictions = torch.stack([self.deployed(x_adv).argmax(dim=1).cpu() for _ in range(self.draws)])
        y = y.cpu()
        detector = self.detector
        if detector is not None:
            detected = detector.detect(self.classifier, x_adv).cpu()
        else:
            detected = torch.zeros(y.shape, dtype=torch.bool)
        if self.draws == 1:
            misclassified = predictions[0] != y
            return Judgement(predictions[0], misclassified, detected, misclassified & ~detected)
        survived = (predictions == y) | detected  # [draws, B]
        half = self.draws // 2
        return Judgement(predictions.mode(dim=0).values, (predictions != y).float().mean(0) > 0.5, detected,
                         ~survived.any(0), survived[:half].sum(0), survived[half:].sum(0), self.draws)


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
        gradient = choose_gradient(defense)
        plan.eot = eot if defense.randomized else 1
        if gradient != "exact" or plan.eot > 1:
            plan.view = deployed.attack_view(gradient=gradient, eot=plan.eot)
        plan.view_description = describe_view(gradient, plan.eot)
    else:
        raise TypeError(f"{label}: cannot evaluate a defence of kind {getattr(defense, 'kind', '?')!r}")
    if not adaptive:
        plan.view, plan.view_description = None, "naive only (adaptive=False)"
        return plan
    custom_view = defense.adaptive_view(plan.deployed)
    if custom_view is not None:
        plan.view = custom_view
        plan.view_description = f"{type(defense).__name__}.adaptive_view()"
    plan.extra_attacks = defense_attacks(defense, norm)
    if plan.extra_attacks:
        names = [getattr(a, "name", None) or (a if isinstance(a, str) else a[0]) for a in plan.extra_attacks]
        plan.view_description += f"; defence-specific: {', '.join(map(str, names))}"
    return plan


def choose_gradient(defense: TransformDefense | PostprocessDefense) -> str:
    """The defence's ``adaptive_gradient`` if declared; else ``exact`` for differentiable defences,
    ``surrogate`` when one is given, else ``bpda``."""
    if defense.adaptive_gradient is not None:
        return defense.adaptive_gradient
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
    """The defence's own adaptive attacks (``adaptive_attack()``), less registered ones that do not support ``norm``.

    ``Attack`` instances and unregistered names are kept: resolving the suite
    checks them and says what is wrong.
    """
    from shieldkit.core.attack import Attack
    from shieldkit.plugins.registry import list_attacks

    found = defense.adaptive_attack() or []
    found = found if isinstance(found, list) else [found]
    registered, supported = set(list_attacks()), set(list_attacks(norm=norm))
    known = lambda name, names: name in names or any(n.split(".")[0] == name for n in names)  # noqa: E731
    kept = []
    for item in found:
        if isinstance(item, Attack):
            kept.append(item)
            continue
        name, params = (item, {}) if isinstance(item, str) else (item[0], dict(item[1]))
        if known(name, supported) or not known(name, registered):
            kept.append((name, params))
    return kept
