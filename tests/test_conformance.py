"""The conformance kit, parametrised over the whole registry: a new attack or defence gets it for free.

Each component runs with its ``smoke_params`` (small budgets declared by the class).
"""

from __future__ import annotations

import pytest
import torch

import shieldkit as sk
from shieldkit.attacks._gradients import loss_gradient, normalized_step
from shieldkit.registry import get_registry
from shieldkit.testing import ConformanceError, check_attack, check_defense


def _smoke(kind: str, name: str) -> dict:
    return dict(get_registry().resolve(kind, name).obj.smoke_params)


@pytest.mark.parametrize("name", sk.list_attacks())
def test_attack_conforms(name):
    check_attack(name, **_smoke("attack", name))


@pytest.mark.parametrize("name", sk.list_defenses())
def test_defense_conforms(name):
    cls = get_registry().resolve("defense", name).obj
    check_defense(name, fit_options=dict(cls.smoke_fit_options), **_smoke("defense", name))


# The kit itself must catch each broken clause and say which one and by how much.


class Misbehaving(sk.Attack):
    """A gradient step scaled by random factors: honest apart from what subclasses break."""

    family = "misbehaving"
    norms = ("linf", "l2")
    randomized = True

    def _run(self, model, x, y, target):
        step = normalized_step(loss_gradient(model, x, y, target), self.norm)
        return self.project(x + self.eps * step * (0.9 + 0.1 * torch.rand_like(x)), x)


class DeclaresScoreButUsesGradients(Misbehaving):
    access = "score"

    def _run(self, model, x, y, target):
        x = x.requires_grad_(True)
        model(x).sum().backward()
        return self.project(x.detach() + self.eps, x.detach())


class ClaimsDeterministic(Misbehaving):
    randomized = False  # but it draws random numbers


class NoTargeting(Misbehaving):
    def _run(self, model, x, y, target):
        if target is None:
            return super()._run(model, x, y, None)
        away = loss_gradient(model, x, target)  # climbs the target's loss: the opposite of targeting
        return self.project(x + self.eps * away.sign(), x)


class LeakyTrainMode(sk.Attack):
    family = "leaky"

    def run(self, model, x, y=None, *, target=None):
        result = super().run(model, x, y, target=target)
        model.eval()
        return result

    def _run(self, model, x, y, target):
        return x


@pytest.mark.parametrize(
    ("attack", "clause"),
    [
        (DeclaresScoreButUsesGradients, "access='score'"),
        (ClaimsDeterministic, "randomized=False"),
        (NoTargeting, "targeted semantics"),
        (LeakyTrainMode, "model state restored"),
    ],
)
def test_kit_names_the_broken_clause(attack, clause):
    with pytest.raises(ConformanceError, match=clause):
        check_attack(attack, eps=0.1)


class Leaky(sk.TransformDefense):
    family = "leaky_transform"

    def _transform(self, x):
        x.mul_(0.5)  # mutates the caller's images
        return x


def test_kit_catches_a_transform_that_mutates_its_input():
    with pytest.raises(ConformanceError, match="input not mutated"):
        check_defense(Leaky)
