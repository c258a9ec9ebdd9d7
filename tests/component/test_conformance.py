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
from shieldkit.exemptions import EFFICACY_EXEMPTIONS, EfficacyExemption, efficacy_exemption
from shieldkit.plugins.registry import get_registry
from shieldkit.testing import (
    ATTACK_CLAUSES,
    DEFENSE_CLAUSES,
    TRAINED_ACCURACY_FLOOR,
    ConformanceError,
    check_attack,
    check_defense,
    tiny_model,
    trained_digits,
)

REPO = Path(__file__).resolve().parents[2]


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
            trained = copy.deepcopy(model)
            with torch.no_grad():
                next(trained.parameters()).mul_(1.001)  # a change small enough to keep the accuracy
            return trained

    check_defense(Recording, fit_options={"epochs": 1})
    (tiny, tiny_options), (digits, digits_options) = received  # the kit's batch, then the efficacy digits
    for train_data, options in received:
        assert isinstance(train_data, ImageData) and options == {"epochs": 1}
        assert train_data.y.dtype == torch.int64 and len(train_data.classes) == 10
    assert tiny.x.shape == (6, 1, 16, 16)
    assert digits.x.shape == (32, 1, 28, 28) and digits.name == "digits" and digits.split == "train"


# The efficacy clauses: a component that keeps the contract but does nothing is caught, under the clause's name.


class ReturnsItsInput(sk.Attack):
    """Queries the model once, then returns x: a wrapper that swallowed its library's failure."""

    family = "returns_its_input"
    access = "score"

    def _run(self, model, x, y, target):
        model(x)
        return x


class FoolsNothing(ReturnsItsInput):
    """Moves every pixel by a thousandth: a change, but far too small to cross any decision boundary."""

    family = "fools_nothing"

    def _run(self, model, x, y, target):
        model(x)
        return self.project(x + 1e-3 * (2 * (x < 0.5).to(x.dtype) - 1), x)


@pytest.mark.parametrize(("attack", "detail"), [(ReturnsItsInput, "returned its input unchanged on all 16 digits"),
                                                (FoolsNothing, "fooled 0 of 16 correctly classified digits")])
def test_an_attack_that_does_nothing_fails_the_efficacy_clause(attack, detail):
    with pytest.raises(ConformanceError) as caught:
        check_attack(attack, eps=0.1)
    assert caught.value.clause == "fools a trained model", str(caught.value)
    assert detail in str(caught.value)
    assert caught.value.clause in ATTACK_CLAUSES


def test_a_working_attack_reports_its_efficacy():
    report = check_attack("pgd.native", steps=3)
    assert report["efficacy"] == {"fooled": 16, "of": 16, "required": 8}  # half of 16, bounded
    report = check_attack("deepfool.native", steps=10)
    assert report["efficacy"] == {"fooled": 16, "of": 16, "required": 14}  # seven eighths, unbounded


class NoOpTrainer(sk.TrainerDefense):
    family = "no_op_trainer"

    def _fit(self, model, train_data, **options):
        return model


class RuinsTheModel(sk.TrainerDefense):
    """Changes the model all right: every parameter to zero, so every digit gets class 0."""

    family = "ruins_the_model"

    def _fit(self, model, train_data, **options):
        trained = copy.deepcopy(model)
        with torch.no_grad():
            for param in trained.parameters():
                param.zero_()
        return trained


class NoOpTransform(sk.TransformDefense):
    family = "no_op_transform"

    def _transform(self, x):
        return x.clone()


@pytest.mark.parametrize(("defense", "clause", "detail"), [
    (NoOpTrainer, "trainer changes the model", "no parameter of the digits CNN changed"),
    (RuinsTheModel, "trainer keeps clean accuracy", f"below the floor of {TRAINED_ACCURACY_FLOOR:.0%}"),
    (NoOpTransform, "transform changes its input", "the output equals the input on all 6 images"),
])
def test_a_defence_that_does_nothing_fails_its_efficacy_clause(defense, clause, detail):
    with pytest.raises(ConformanceError) as caught:
        check_defense(defense)
    assert caught.value.clause == clause, str(caught.value)
    assert detail in str(caught.value)
    assert clause in DEFENSE_CLAUSES


def test_the_efficacy_model_is_trained_once_and_gets_its_digits_right():
    state = torch.random.get_rng_state()
    digits = trained_digits()
    assert trained_digits() is digits  # cached: the registry-wide run trains it once per process
    assert torch.equal(torch.random.get_rng_state(), state)
    assert digits.accuracy > 0.85 and digits.x.shape == (16, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(digits.model(digits.x).argmax(dim=1), digits.y)


def test_exemptions_are_found_by_class_and_by_instance():
    noise = get_registry().resolve("attack", "noise.native").obj
    assert efficacy_exemption(noise) is EFFICACY_EXEMPTIONS["noise.native"]
    assert efficacy_exemption(noise(eps=0.1)) is EFFICACY_EXEMPTIONS["noise.native"]  # built directly: no source
    assert efficacy_exemption(sk.create_attack("pgd.native")) is None


def test_every_exemption_names_a_registered_component():
    registered = set(sk.list_attacks()) | set(sk.list_defenses())
    assert set(EFFICACY_EXEMPTIONS) <= registered, set(EFFICACY_EXEMPTIONS) - registered


# Declared efficacy exemptions: a component weak by design says so on its class (docs/plugins.md, section 5),
# and the kit holds it to the lower bar it declares, names it in the report, and still fails a no-op.


def _sign_noise() -> type:
    """The noise baseline of docs/plugins.md, section 5, defined by running the page's code as written
    (which also runs the kit on it)."""
    text = (REPO / "docs" / "plugins.md").read_text()
    section = text.split("## 5. Weak by design", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    namespace = {"__name__": "plugins_md_section_5"}
    exec(compile(code, "docs/plugins.md: section 5", "exec"), namespace)  # noqa: S102 - our own documentation
    return namespace["SignNoise"]


@pytest.fixture(scope="module")
def sign_noise() -> type:
    return _sign_noise()


def test_a_declared_noise_baseline_passes_and_the_report_names_its_declaration(sign_noise):
    report = check_attack(sign_noise, eps=0.1, restarts=3)
    assert report["efficacy"] == {"exempt": "not run; changes its input", "reason": sign_noise.efficacy_exemption.reason}
    assert efficacy_exemption(sign_noise) is sign_noise.efficacy_exemption
    assert efficacy_exemption(sign_noise(eps=0.1)) is sign_noise.efficacy_exemption


def test_the_same_noise_baseline_undeclared_fails_the_efficacy_clause(sign_noise):
    undeclared = type("SignNoise", (sign_noise,), {"efficacy_exemption": None})
    with pytest.raises(ConformanceError) as caught:
        check_attack(undeclared, eps=0.1, restarts=3)
    assert caught.value.clause == "fools a trained model", str(caught.value)
    assert "fooled 2 of 16 correctly classified digits (changed 16); 8 required" in str(caught.value)
    assert "declared" not in str(caught.value)


def test_a_noise_baseline_that_fools_some_passes_the_lower_bar(sign_noise):
    fools_some = EfficacyExemption("random sign noise: a baseline", fools_some=True)
    declared = type("SignNoise", (sign_noise,), {"efficacy_exemption": fools_some})
    report = check_attack(declared, eps=0.1, restarts=3)
    assert report["efficacy"] == {"fooled": 2, "of": 16, "required": 1, "exempt": "at least one digit fooled",
                                  "reason": "random sign noise: a baseline"}


class DeclaredButReturnsItsInput(ReturnsItsInput):
    efficacy_exemption = EfficacyExemption("a noise baseline, it says")


class FoolsSomeButReturnsItsInput(ReturnsItsInput):
    efficacy_exemption = EfficacyExemption("a weak attack, it says", fools_some=True)


@pytest.mark.parametrize(("attack", "detail"), [
    (DeclaredButReturnsItsInput, "(tiny model): returned its input unchanged on every image of every run "
                                 "(declared exempt: a noise baseline, it says)"),
    (FoolsSomeButReturnsItsInput, "returned its input unchanged on all 16 digits (declared exempt: a weak attack, "
                                  "it says)"),
])
def test_a_declared_attack_that_returns_its_input_still_fails(attack, detail):
    with pytest.raises(ConformanceError) as caught:
        check_attack(attack, eps=0.1)
    assert caught.value.clause == "fools a trained model", str(caught.value)
    assert detail in str(caught.value)


def test_an_attack_declared_to_return_its_input_where_it_fails_is_not_asked_to_change_it():
    class MayReturnItsInput(ReturnsItsInput):
        efficacy_exemption = EfficacyExemption("finds nothing at this budget", may_return_input=True)

    report = check_attack(MayReturnItsInput, eps=0.1)
    assert report["efficacy"] == {"exempt": "not run; may return its input", "reason": "finds nothing at this budget"}


class DeclaredNoOpTransform(NoOpTransform):
    efficacy_exemption = EfficacyExemption("the identity on some inputs by design")


class DeclaredNoOpTrainer(NoOpTrainer):
    efficacy_exemption = EfficacyExemption("a regulariser, it says")


@pytest.mark.parametrize(("defense", "clause", "detail"), [
    (DeclaredNoOpTransform, "transform changes its input",
     "the output equals the input on all 6 images (declared exempt: the identity on some inputs by design)"),
    (DeclaredNoOpTrainer, "trainer changes the model",
     "no parameter of the tiny model changed after fit (declared exempt: a regulariser, it says)"),
])
def test_a_declared_defence_that_does_nothing_still_fails(defense, clause, detail):
    with pytest.raises(ConformanceError) as caught:
        check_defense(defense)
    assert caught.value.clause == clause, str(caught.value)
    assert detail in str(caught.value)


def test_a_declared_trainer_is_not_fitted_on_the_digits_and_the_report_names_its_declaration():
    class Regulariser(sk.TrainerDefense):
        family = "regulariser"
        efficacy_exemption = EfficacyExemption("a regulariser, not built to keep clean accuracy")

        def _fit(self, model, train_data, **options):
            trained = copy.deepcopy(model)
            with torch.no_grad():
                for param in trained.parameters():
                    param.zero_()  # what would fail 'trainer keeps clean accuracy' on the digits
            return trained

    report = check_defense(Regulariser)
    assert report["efficacy"] == {"exempt": "not run; changes its input",
                                  "reason": "a regulariser, not built to keep clean accuracy"}


def test_shieldkits_own_exemptions_go_through_the_same_declaration():
    noise = get_registry().resolve("attack", "noise.native").obj
    assert noise.efficacy_exemption is None  # not annotated: declared in the table, by registered name
    report = check_attack("noise.native", **_smoke("attack", "noise.native"))
    assert report["efficacy"] == {"exempt": "not run; changes its input",
                                  "reason": EFFICACY_EXEMPTIONS["noise.native"].reason}
    assert all(type(exemption) is EfficacyExemption for exemption in EFFICACY_EXEMPTIONS.values())
    # A class that declares its own exemption is not listed again: one declaration per component.
    registry = get_registry()
    for kind in ("attack", "defense"):
        for name, entry in registry.entries(kind).items():
            assert not (name in EFFICACY_EXEMPTIONS and entry.obj.efficacy_exemption is not None), name


def test_the_example_plugin_declares_its_noise_baseline_itself():
    salt_pepper = get_registry().resolve("attack", "salt_pepper.example").obj
    assert "salt_pepper.example" not in EFFICACY_EXEMPTIONS  # a third-party plugin needs no entry in shieldkit
    assert efficacy_exemption(salt_pepper) is salt_pepper.efficacy_exemption is not None


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"reason": " "}, "reason must say why"),
    ({"reason": "weak", "fools_some": True, "may_return_input": True}, "contradicts it"),
])
def test_an_exemption_without_a_reason_or_with_contradicting_bars_is_refused(kwargs, message):
    with pytest.raises(sk.InvalidParameterError, match=message):
        EfficacyExemption(**kwargs)


def test_backends_page_lists_the_efficacy_exemptions():
    text = (REPO / "docs" / "backends.md").read_text()
    block = text.split("<!-- efficacy-exemptions:start -->", 1)[1].split("<!-- efficacy-exemptions:end -->", 1)[0]
    documented = {}
    for row in block.strip().splitlines()[2:]:  # after the header and its rule
        name, bar, reason = (cell.strip() for cell in row.strip("|").split(" | "))
        documented[name.strip("`")] = (bar, reason)
    expected = {name: (exemption.requirement, exemption.reason) for name, exemption in EFFICACY_EXEMPTIONS.items()}
    assert documented == expected
