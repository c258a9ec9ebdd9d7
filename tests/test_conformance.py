"""The conformance kit, parametrised over the whole registry: a new attack or defence gets it for free.

Each component runs with its ``smoke_params`` (small budgets declared by the class).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch

import shieldkit as sk
from shieldkit.attacks._gradients import loss_gradient, normalized_step
from shieldkit.registry import get_registry
from shieldkit.testing import (
    ATTACK_CLAUSES,
    DEFENSE_CLAUSES,
    ConformanceError,
    check_attack,
    check_defense,
    tiny_model,
)

REPO = Path(__file__).resolve().parents[1]


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


# Each broken attack of the issue is caught under its own clause name, not as a symptom further down.


class WritesLabels(Misbehaving):
    """Overwrites its labels with the next class (a bug: it meant to copy them first)."""

    def _run(self, model, x, y, target):
        y.add_(1).remainder_(10)
        return super()._run(model, x, y, target)


class LeavesTrainMode(Misbehaving):
    """Switches the model to train mode (as some training-minded libraries do) and never back."""

    def _run(self, model, x, y, target):
        x_adv = super()._run(model, x, y, target)
        model.train()
        return x_adv


class QueriesACopy(Misbehaving):
    """Attacks a deep copy of the model, so no forward pass through the model itself is ever counted."""

    def _run(self, model, x, y, target):
        return super()._run(copy.deepcopy(model), x, y, target)


class BreaksItsBudget(Misbehaving):
    """Steps twice as far as its eps."""

    def _run(self, model, x, y, target):
        step = normalized_step(loss_gradient(model, x, y, target), self.norm)
        return (x + 2 * self.eps * step).clamp(0, 1)


class Crashes(Misbehaving):
    def _run(self, model, x, y, target):
        raise RuntimeError("out of ideas")


@pytest.mark.parametrize(
    ("attack", "clause", "cause"),
    [
        (WritesLabels, "labels not mutated", sk.AttackContractError),
        (LeavesTrainMode, "left the model in train mode", sk.AttackContractError),
        (QueriesACopy, "at least one forward pass", None),
        (BreaksItsBudget, "epsilon-ball", sk.AttackContractError),
        (Crashes, "runs", RuntimeError),
    ],
)
def test_each_broken_attack_is_caught_under_its_own_clause(attack, clause, cause):
    with pytest.raises(ConformanceError) as caught:
        check_attack(attack, eps=0.1)
    assert caught.value.clause == clause, str(caught.value)
    assert f"clause '{clause}' failed" in str(caught.value)
    assert clause in ATTACK_CLAUSES  # a documented clause
    if cause is None:
        assert caught.value.__cause__ is None
    else:
        assert type(caught.value.__cause__) is cause


def _hand_labelled_batch():
    model = tiny_model().eval()
    x = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    return model, x, torch.tensor([0, 1, 2, 3, 4, 5])


def test_run_never_changes_the_callers_labels():
    model, x, y = _hand_labelled_batch()
    target = torch.tensor([9, 8, 7, 6, 5, 4])
    with pytest.raises(sk.AttackContractError, match=r"wrote to its labels y in place \(6 of 6 changed\)"):
        WritesLabels(eps=0.1).run(model, x, y)
    with pytest.raises(sk.AttackContractError, match="wrote to its labels"):
        WritesLabels(eps=0.1).run(model, x, y, target=target)
    assert y.tolist() == [0, 1, 2, 3, 4, 5] and target.tolist() == [9, 8, 7, 6, 5, 4]


def test_train_mode_is_refused_before_any_prediction_is_made_in_it():
    model, x, y = _hand_labelled_batch()
    modes_seen = []
    model.register_forward_hook(lambda module, inputs, output: modes_seen.append(module.training))
    every_module = len(list(model.modules()))  # model.train() switches them all
    with pytest.raises(sk.AttackContractError, match=rf"misbehaving left the model in train mode \({every_module} modules"):
        LeavesTrainMode(eps=0.1).run(model, x, y)
    assert modes_seen == [False]  # the attack's own forward pass, in eval mode; no prediction in train mode
    assert not any(m.training for m in model.modules())  # the caller's (eval) modes are back


def test_an_algorithm_that_restores_eval_mode_itself_is_fine():
    class TogglesBack(Misbehaving):
        def _run(self, model, x, y, target):
            model.train()
            model.eval()
            return super()._run(model, x, y, target)

    model, x, y = _hand_labelled_batch()
    assert TogglesBack(eps=0.1, seed=0).run(model, x, y).forwards == 1


def test_documented_clauses_are_the_kits_clauses():
    documented = " ".join((REPO / "docs" / "plugins.md").read_text().split())  # a line break renders as a space
    docstring = " ".join(check_attack.__doc__.split())
    for clause in list(ATTACK_CLAUSES) + list(DEFENSE_CLAUSES):
        assert f"`{clause}`" in documented, f"docs/plugins.md does not list the clause {clause!r}"
    for clause in ATTACK_CLAUSES:
        assert f"``{clause}``" in docstring, clause


# docs/plugins.md's defence walkthroughs run as written: every code block of section 6, one namespace per walkthrough.


def _walkthroughs() -> dict[str, str]:
    text = (REPO / "docs" / "plugins.md").read_text()
    section = text.split("## 6. Defences, kind by kind", 1)[1].split("\n## ", 1)[0]
    found = {}
    for part in section.split("\n### ")[1:]:
        title, _, body = part.partition("\n")
        blocks = re.findall(r"```python\n(.*?)```", body, flags=re.S)
        found[title.strip()] = "\n".join(blocks)
    return found


def test_the_plugin_page_has_a_walkthrough_per_defence_kind():
    titles = " | ".join(_walkthroughs())
    for kind in ("transform without a differentiable surrogate", "with a differentiable surrogate",
                 "postprocess", "detector", "trainer"):
        assert kind in titles, titles


@pytest.mark.parametrize("title", list(_walkthroughs()))
def test_plugin_walkthrough_runs_and_conforms(title):
    code = _walkthroughs()[title]
    assert "check_defense(" in code  # each walkthrough ends in the conformance kit
    namespace = {"__name__": f"walkthrough_{len(title)}"}
    exec(compile(code, f"docs/plugins.md: {title}", "exec"), namespace)  # noqa: S102 - our own documentation


def test_trainer_receives_image_data_in_the_kit_as_in_the_evaluation():
    from shieldkit.data import ImageData

    received = []

    class Recording(sk.TrainerDefense):
        family = "recording"

        def _fit(self, model, train_data, **options):
            received.append((train_data, options))
            return model

    check_defense(Recording, fit_options={"epochs": 1})
    (train_data, options), = received
    assert isinstance(train_data, ImageData) and options == {"epochs": 1}
    assert train_data.x.shape == (6, 1, 16, 16) and train_data.y.dtype == torch.int64
    assert len(train_data.classes) == 10
