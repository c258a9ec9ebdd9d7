"""The conformance kit: check that an attack or defence keeps shieldkit's contract.

Plugin authors call these from their own tests::

    from shieldkit.testing import check_attack, check_defense

    def test_salt_pepper():
        check_attack("salt_pepper.example")

Each check runs the candidate on a tiny built-in model (with BatchNorm and
Dropout, left in training mode with gradients present, so that a leaked mode or
gradient shows) and raises :class:`ConformanceError` naming the clause that broke
and by how much.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shieldkit.attack import Attack
from shieldkit.component import Component
from shieldkit.defense import (
    DefendedModel,
    Defense,
    DetectorDefense,
    PostprocessDefense,
    TrainerDefense,
    TransformDefense,
)
from shieldkit.errors import InvalidInputError, InvalidParameterError
from shieldkit.guard import compare_state, snapshot_state
from shieldkit.registry import create_attack, create_defense
from shieldkit.threat import norm_of

__all__ = ["ConformanceError", "check_attack", "check_defense", "tiny_model", "tiny_batch"]


class ConformanceError(AssertionError):
    """A clause of the attack or defence contract does not hold."""


def tiny_model(in_channels: int = 1, size: int = 16, num_classes: int = 10, seed: int = 0) -> nn.Module:
    """A small CNN with BatchNorm and Dropout and deterministic weights, left in training mode."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Dropout(0.25),
        nn.Flatten(),
        nn.Linear(8 * (size // 2) ** 2, 32),
        nn.ReLU(),
        nn.Linear(32, num_classes),
    )
    torch.random.set_rng_state(generator_state)
    return model.train()


def tiny_batch(model: nn.Module, shape=(6, 1, 16, 16), bounds=(0.0, 1.0), seed: int = 0) -> tuple[Tensor, Tensor]:
    """Random images inside ``bounds`` and the model's own (eval-mode) predictions as labels."""
    generator = torch.Generator().manual_seed(seed)
    low, high = bounds
    x = low + (high - low) * torch.rand(shape, generator=generator)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    model.train(was_training)
    return x, y


def _dirty(model: nn.Module) -> None:
    """Give the model what a careless attack would disturb: gradients, a frozen layer, train mode."""
    model.train()
    params = list(model.parameters())
    params[0].requires_grad_(False)
    x = torch.rand(2, *_input_shape(model))
    model(x).square().mean().backward()
    model.train()


def _input_shape(model: nn.Module) -> tuple[int, int, int]:
    return getattr(model, "_conformance_shape", (1, 16, 16))


def _fail(owner: str, clause: str, detail: str) -> None:
    raise ConformanceError(f"{owner}: clause '{clause}' failed: {detail}")


def _check(condition: bool, owner: str, clause: str, detail: str) -> None:
    if not condition:
        _fail(owner, clause, detail)


def _predict(model: nn.Module, x: Tensor) -> Tensor:
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(x).argmax(dim=1)
    model.train(was_training)
    return out


def _builder(candidate: str | Component | type, params: dict[str, Any], create: Callable[..., Any]) -> Callable[..., Any]:
    """``build(**overrides)``, which makes the candidate a check runs (again, with some parameters changed).

    A registered name goes through ``create`` and a class is called, both with
    ``params`` and ``overrides``; an instance is returned as it is, or rebuilt
    from its own parameters and ``overrides``.
    """

    def build(**overrides: Any) -> Any:
        merged = {**params, **overrides}
        if isinstance(candidate, str):
            return create(candidate, **merged)
        if isinstance(candidate, type):
            return candidate(**merged)
        if overrides:
            return type(candidate)(**{**candidate.get_params(), **overrides})
        return candidate

    return build


# -------------------------------------------------------------------- attacks


def check_attack(
    name_or_attack: str | Attack | type,
    *,
    shape: tuple[int, int, int, int] = (6, 1, 16, 16),
    num_classes: int = 10,
    model: nn.Module | None = None,
    **params: Any,
) -> dict[str, Any]:
    """Run an attack on a tiny model and assert the whole attack contract.

    Clauses: output shape, dtype and device; bounds; epsilon-ball in every declared
    norm (for bounded attacks); the input not mutated; the model's training flags,
    ``requires_grad``, ``.grad``, parameters and buffers restored; the same output
    for the same ``seed``; ``AttackResult`` consistent with the model's predictions;
    targeted semantics (or a clear refusal); the declared ``access`` and
    ``randomized`` capabilities true; bad input rejected.

    Args:
        name_or_attack: a registered name, an ``Attack`` instance or an ``Attack`` subclass.
        shape: the test batch ``[B, C, H, W]``.
        num_classes: classes of the tiny model.
        model: use this model instead of the tiny one (it is put in training mode).
        **params: constructor parameters (for names and classes); ``seed`` defaults to 1234.

    Returns:
        a small report: the attack's name, norms checked, success rates and costs.
    """
    params.setdefault("seed", 1234)

    build = _builder(name_or_attack, params, create_attack)

    attack = build()
    owner = attack.name
    if model is None:
        model = tiny_model(shape[1], shape[2], num_classes)
    model._conformance_shape = tuple(shape[1:])
    _dirty(model)
    x, y = tiny_batch(model, shape, attack.bounds)
    report: dict[str, Any] = {"attack": owner, "norms": {}}

    for norm in attack.norms:
        candidate = attack if norm == attack.norm else build(norm=norm)
        report["norms"][norm] = _check_one_run(candidate, model, x, y, None, owner)

    # Same seed, same output.
    first = attack.run(model, x, y).x_adv
    second = build().run(model, x, y).x_adv
    gap = (first - second).abs().max().item()
    _check(gap <= 1e-6, owner, "deterministic under seed", f"two runs with seed={attack.seed} differ by up to {gap:.3g}")

    if not attack.randomized:
        unseeded = build(seed=None)
        torch.manual_seed(1)
        one = unseeded(model, x, y)
        torch.manual_seed(2)
        two = unseeded(model, x, y)
        gap = (one - two).abs().max().item()
        _check(gap <= 1e-6, owner, "randomized=False",
               f"declared deterministic but two unseeded runs differ by up to {gap:.3g}")

    target = (y + 1) % num_classes
    if attack.targeted:
        run = _check_one_run(attack, model, x, y, target, owner)
        report["targeted_success"] = run["success_rate"]
    else:
        try:
            attack.run(model, x, y, target=target)
        except InvalidParameterError:
            pass
        else:
            _fail(owner, "targeted=False", "accepted target= although it declares it cannot target")

    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    try:
        attack.run(model, bad, y)
    except InvalidInputError:
        pass
    else:
        _fail(owner, "bad input", "a NaN image was accepted")
    return report


def _check_one_run(attack: Attack, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None, owner: str) -> dict:
    x_before = x.clone()
    state_before = snapshot_state(model)
    result = attack.run(model, x, y, target=target)
    clause_suffix = f" ({attack.norm}{', targeted' if target is not None else ''})"

    _check(torch.equal(x, x_before), owner, "input not mutated" + clause_suffix,
           f"x changed in place by up to {(x - x_before).abs().max().item():.3g}")
    problems = compare_state(state_before, snapshot_state(model))
    _check(not problems, owner, "model state restored" + clause_suffix, "; ".join(problems[:5]))

    x_adv = result.x_adv
    _check(isinstance(x_adv, Tensor) and x_adv.shape == x.shape, owner, "shape",
           f"x_adv has shape {tuple(getattr(x_adv, 'shape', ()))}, expected {tuple(x.shape)}")
    _check(x_adv.dtype == x.dtype and x_adv.device == x.device, owner, "dtype and device",
           f"x_adv is {x_adv.dtype} on {x_adv.device}, x is {x.dtype} on {x.device}")
    low, high = attack.bounds
    outside = max(low - x_adv.min().item(), x_adv.max().item() - high, 0.0)
    _check(outside == 0.0, owner, "bounds" + clause_suffix, f"x_adv leaves {attack.bounds} by {outside:.3g}")
    if attack.eps is not None:
        distance = norm_of(x_adv - x, attack.norm).max().item()
        allowed = attack.eps * (1 + 1e-5) + 1e-6
        _check(distance <= allowed, owner, "epsilon-ball" + clause_suffix,
               f"max ||x_adv - x||_{attack.norm} = {distance:.6g} > eps = {attack.eps:.6g} by {distance - attack.eps:.3g}")

    predictions = _predict(model, x_adv)
    expected = predictions == target if target is not None else predictions != y
    mismatched = (expected != result.success).sum().item()
    _check(mismatched == 0, owner, "success reported" + clause_suffix,
           f"{mismatched} samples' success disagrees with the model's predictions on x_adv")
    for norm, reported in (("l2", result.l2), ("linf", result.linf)):
        gap = (norm_of(x_adv - x, norm) - reported).abs().max().item()
        _check(gap <= 1e-4, owner, f"{norm} reported" + clause_suffix, f"reported {norm} off by {gap:.3g}")

    _check(result.forwards >= 1, owner, "forwards counted" + clause_suffix, "no forward pass was counted")
    if attack.access == "gradient":
        _check(result.backwards >= 1, owner, "access='gradient'" + clause_suffix,
               "declared a gradient attack but made no backward pass through the model")
    else:
        _check(result.backwards == 0, owner, f"access={attack.access!r}" + clause_suffix,
               f"declared {attack.access}-based but made {result.backwards} backward passes")

    if target is not None:
        model.eval()
        with torch.no_grad():
            before = F.log_softmax(model(x), 1).gather(1, target[:, None]).mean().item()
            after = F.log_softmax(model(x_adv), 1).gather(1, target[:, None]).mean().item()
        model.train()
        _check(after >= before - 0.05, owner, "targeted semantics",
               f"mean log-probability of the target fell from {before:.4f} to {after:.4f}")
    return {"success_rate": result.success_rate, "forwards": result.forwards,
            "backwards": result.backwards, "seconds": result.seconds}


# ------------------------------------------------------------------- defences


def check_defense(
    name_or_defense: str | Defense | type,
    *,
    shape: tuple[int, int, int, int] = (6, 1, 16, 16),
    num_classes: int = 10,
    model: nn.Module | None = None,
    fit_options: dict[str, Any] | None = None,
    **params: Any,
) -> dict[str, Any]:
    """Assert the contract of a defence of any kind on a tiny model.

    Transforms: shape, dtype, bounds, input not mutated, determinism under ``seed``,
    ``randomized`` true to behaviour, ``wrap`` gives ``[B, K]`` logits, BPDA and
    (for ``differentiable`` ones) exact gradients are finite and non-zero, EOT runs,
    and an attack through the view keeps its budget. Postprocess: outputs and views.
    Detectors: ``fit`` sets a threshold near the requested FPR, ``score``/``detect``
    shapes, errors for zero samples and for ``detect`` before ``fit``. Trainers:
    ``fit`` returns a model with the right output shape.

    Args:
        name_or_defense: a registered name, a ``Defense`` instance or subclass.
        fit_options: keyword arguments for a trainer's ``fit`` (keep them small).
        **params: constructor parameters (for names and classes).
    """

    build = _builder(name_or_defense, params, create_defense)

    defense = build()
    owner = defense.name
    if model is None:
        model = tiny_model(shape[1], shape[2], num_classes)
    model.eval()
    x, y = tiny_batch(model, shape, defense.bounds)
    report: dict[str, Any] = {"defense": owner, "kind": defense.kind}

    if isinstance(defense, TransformDefense):
        _check_transform(build, defense, model, x, y, owner)
    elif isinstance(defense, PostprocessDefense):
        _check_wrapped(defense, model, x, y, owner)
    elif isinstance(defense, DetectorDefense):
        report.update(_check_detector(defense, model, x, owner))
    elif isinstance(defense, TrainerDefense):
        trained = defense.fit(model, (x, y), **(fit_options or {}))
        _check(isinstance(trained, nn.Module), owner, "trainer returns a model", f"fit returned {type(trained).__name__}")
        trained.eval()
        with torch.no_grad():
            out = trained(x)
        _check(out.shape == (x.shape[0], num_classes), owner, "trained model output",
               f"logits of shape {tuple(out.shape)}, expected {(x.shape[0], num_classes)}")
    else:
        _fail(owner, "kind", f"{type(defense).__name__} is none of the four defence kinds")
    return report


def _check_transform(build, defense: TransformDefense, model, x, y, owner) -> None:
    x_before = x.clone()
    out = defense(x)
    _check(torch.equal(x, x_before), owner, "input not mutated", "the transform changed x in place")
    _check(out.shape == x.shape and out.dtype == x.dtype, owner, "shape and dtype",
           f"got {tuple(out.shape)} {out.dtype}, expected {tuple(x.shape)} {x.dtype}")
    low, high = defense.bounds
    _check(out.min().item() >= low and out.max().item() <= high, owner, "bounds", f"output leaves {defense.bounds}")
    if defense.randomized:
        seeded_a, seeded_b = build(seed=7)(x), build(seed=7)(x)
        gap = (seeded_a - seeded_b).abs().max().item()
        _check(gap <= 1e-6, owner, "deterministic under seed", f"two instances with seed=7 differ by {gap:.3g}")
        unseeded = build(seed=None)
        differs = any(not torch.equal(unseeded(x), unseeded(x)) for _ in range(3))
        _check(differs, owner, "randomized=True", "declared randomized but repeated calls give identical outputs")
    else:
        gap = (defense(x) - out).abs().max().item()
        _check(gap <= 1e-6, owner, "randomized=False", f"declared deterministic but repeated calls differ by {gap:.3g}")
    _check_wrapped(defense, model, x, y, owner)


def _check_wrapped(defense, model, x, y, owner) -> None:
    defended = defense.wrap(model)
    _check(isinstance(defended, DefendedModel), owner, "wrap", f"wrap returned {type(defended).__name__}")
    with torch.no_grad():
        logits = defended(x)
    _check(logits.shape == (x.shape[0], model(x).shape[1]), owner, "wrap output", f"logits {tuple(logits.shape)}")
    gradients = ["bpda", "surrogate"] + (["exact"] if defense.differentiable else [])
    for gradient in gradients:
        view = defended.attack_view(gradient=gradient, eot=2 if defense.randomized else 1)
        inputs = x.clone().requires_grad_(True)
        loss = F.cross_entropy(view(inputs), y)
        (grad,) = torch.autograd.grad(loss, inputs)
        _check(bool(torch.isfinite(grad).all()), owner, f"attack_view({gradient!r}) gradient", "non-finite gradient")
        _check(grad.abs().sum().item() > 0, owner, f"attack_view({gradient!r}) gradient", "gradient is all zero")
    if not defense.differentiable:
        try:
            defended.attack_view(gradient="exact")
        except InvalidParameterError:
            pass
        else:
            _fail(owner, "differentiable=False", "attack_view(gradient='exact') was allowed")
    else:
        inputs = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(defended(inputs), y), inputs)
        _check(bool(torch.isfinite(grad).all()) and grad.abs().sum().item() > 0, owner,
               "differentiable=True", "autograd through the deployed model gives no useful gradient")
    attack = create_attack("fgsm.native", eps=0.1)
    x_adv = attack(defended.attack_view(gradient="bpda"), x, y)
    _check(norm_of(x_adv - x, "linf").max().item() <= 0.1 + 1e-6, owner, "attack through the view",
           "FGSM through attack_view broke its budget")


def _check_detector(defense: DetectorDefense, model, x, owner) -> dict:
    try:
        defense.detect(model, x)
    except InvalidParameterError:
        pass
    else:
        _fail(owner, "detect before fit", "detect() worked without fit()")
    try:
        defense.fit(model, x[:0], fpr=0.1)
    except InvalidInputError:
        pass
    else:
        _fail(owner, "fit on zero samples", "fit accepted an empty batch")
    x_fit = torch.cat([x, x.flip(0), x.flip(-1), x.flip(-2)])
    state_before = snapshot_state(model)
    defense.fit(model, x_fit, fpr=0.25)
    problems = compare_state(state_before, snapshot_state(model))
    _check(not problems, owner, "model state restored", "; ".join(problems[:5]))
    _check(defense.threshold is not None and math.isfinite(defense.threshold), owner, "threshold", "fit set no finite threshold")
    scores = defense.score(model, x_fit)
    _check(scores.shape == (x_fit.shape[0],) and bool(torch.isfinite(scores).all()), owner, "score",
           f"scores of shape {tuple(scores.shape)} (finite: {bool(torch.isfinite(scores).all())})")
    flagged = defense.detect(model, x_fit)
    _check(flagged.dtype == torch.bool and flagged.shape == scores.shape, owner, "detect", "detect must return [B] bool")
    rate = flagged.float().mean().item()
    _check(rate <= 0.25 + 1.0 / x_fit.shape[0] + 1e-6, owner, "false-positive rate",
           f"{rate:.2%} of the fitting data flagged at fpr=25%")
    return {"flagged_clean": rate}
