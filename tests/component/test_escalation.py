"""Escalation remedies for defences hidden inside a user's model (shieldkit.escalation).

Each remedy is tested on its own against a reference written here (a hand-computed
gradient, a Monte-Carlo estimate, or PGD on the raw model as the naive baseline), and
end to end: native PGD through the planned views, the per-sample worst case judged
on the real model, against a hand-written adaptive attack that knows each defence
(BPDA / EOT / margin loss, more steps). The reference never imports shieldkit.escalation.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from support import defended_zoo
from support.zoo_references import RANDOM_JUDGED, REFERENCES, correct, margin_loss, reference_attack
from torch import nn

import shieldkit
from shieldkit.core.errors import InvalidParameterError
from shieldkit.escalation import (
    AutoBPDAView,
    EOTView,
    LogProbabilityView,
    NormalizedLogitsView,
    SmoothedView,
    SurrogateView,
    distill_surrogate,
    eot_draws,
    find_gradient_cuts,
    plan_remedies,
)

N_IMAGES = 100


@pytest.fixture(scope="module")
def base():
    """A one-hidden-layer MLP (256 units) trained for 2 epochs on 10,000 real MNIST images (about 90%),
    cached on disk by shieldkit's model cache: cheap enough for many attacks on 2 cores."""
    from shieldkit.models.cache import pretrained

    return pretrained("mlp", data="mnist", epochs=2, n_train=10000, seed=0).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def images(mnist_test):
    return mnist_test.x[:N_IMAGES], mnist_test.y[:N_IMAGES]


def zoo(name: str, base: nn.Module) -> nn.Module:
    return defended_zoo.ZOO[name](base).eval()


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss=F.cross_entropy) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(loss(model(x), y, reduction="sum"), x)
    return gradient


def pgd(model: nn.Module, x, y, eps: float, steps: int = 20, **params) -> torch.Tensor:
    return shieldkit.create_attack("pgd", eps=eps, steps=steps, seed=0, **params)(model, x, y)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample cosine similarity of two gradient batches."""
    return F.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)


# --------------------------------------------------------------- EOT


def test_eot_draws_follow_the_noise_rule():
    assert eot_draws(0.0) == 1
    assert eot_draws(0.25) == 1
    assert eot_draws(0.5) == 4  # (0.5 / 0.25)^2: averaging n draws divides the noise by sqrt(n)
    assert eot_draws(1.0) == 16
    assert eot_draws(10.0) == 32 and eot_draws(10.0, cap=8) == 8
    assert eot_draws(None) == 8
    assert eot_draws(1.0, target=0.5) == 4
    with pytest.raises(InvalidParameterError, match="gradient_noise"):
        eot_draws(-1.0)
    with pytest.raises(InvalidParameterError, match="cap"):
        eot_draws(1.0, cap=0)


def test_eot_view_averages_draws_and_its_gradient_is_closer_to_the_expected_one(base, images):
    model = zoo("gaussian_noise", base)
    x, y = images[0][:16], images[1][:16]
    view = EOTView(model, draws=16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        averaged = view(x)
        torch.manual_seed(5)
        by_hand = torch.stack([model(x) for _ in range(16)]).mean(0)
    torch.testing.assert_close(averaged, by_hand)
    torch.manual_seed(0)
    expected = torch.stack([input_gradient(model, x, y) for _ in range(96)]).mean(0)  # Monte-Carlo truth
    one_draw = cosine(input_gradient(model, x, y), expected).mean()
    averaged_draws = cosine(input_gradient(view, x, y), expected).mean()
    assert averaged_draws > one_draw + 0.2 and averaged_draws > 0.7, (one_draw, averaged_draws)
    with pytest.raises(InvalidParameterError, match="draws"):
        EOTView(model, draws=0)


# --------------------------------------------------------------- BPDA


@pytest.mark.parametrize("name, mechanism", [
    ("quantize", "round: straight-through"),
    ("binarize", "gt: sigmoid relaxation"),
    ("thermometer", "heaviside: sigmoid relaxation"),
    ("numpy_round_trip", "input of base.fc1: identity"),
])
def test_auto_bpda_finds_the_cut_keeps_the_values_and_its_gradient_breaks_the_defence(base, images, name, mechanism):
    model = zoo(name, base)
    x, y = images[0][:50], images[1][:50]
    assert mechanism in find_gradient_cuts(model, x)
    view = AutoBPDAView(model)
    xg = x.clone().requires_grad_(True)
    torch.testing.assert_close(view(xg).detach(), model(x), rtol=0, atol=1e-5)
    gradient = input_gradient(view, x, y, margin_loss)
    assert gradient.flatten(1).abs().sum(1).gt(0).float().mean() > 0.9  # a gradient on (nearly) every sample
    naive = correct(model, pgd(model, x, y, 0.3, steps=10, loss="margin") if name == "quantize" else x, y)
    adaptive = correct(model, pgd(view, x, y, 0.3, steps=10, loss="margin"), y)
    assert adaptive.mean() < naive.mean() - 0.2, (naive.mean(), adaptive.mean())


def test_auto_bpda_gradient_of_a_quantiser_is_the_identity_backward_by_hand(base, images):
    model = zoo("quantize", base)
    x, y = images[0][:20], images[1][:20]
    quantized = torch.round(x * 3) / 3
    by_hand = input_gradient(base, quantized, y)  # d/dx base(q(x)) with dq/dx := I
    torch.testing.assert_close(input_gradient(AutoBPDAView(model), x, y), by_hand, rtol=1e-4, atol=1e-6)


def test_auto_bpda_leaves_a_differentiable_model_alone_and_removes_its_hooks(base, images):
    x, y = images[0][:10], images[1][:10]
    view = AutoBPDAView(base)
    torch.testing.assert_close(input_gradient(view, x, y), input_gradient(base, x, y))
    assert view.found == ()
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in base.modules())
    with pytest.raises(InvalidParameterError, match="preprocessing"):
        AutoBPDAView(base, preprocessing="sometimes")


def test_auto_bpda_identity_preprocessing_straightens_a_shattered_transform(base, images):
    model = zoo("shattered_gradients", base)
    x, y = images[0][:30], images[1][:30]
    true_direction = input_gradient(base, x, y)  # the transform moves pixels by at most 0.02
    raw = cosine(input_gradient(model, x, y), true_direction).mean()
    straightened = cosine(input_gradient(AutoBPDAView(model, preprocessing="identity"), x, y), true_direction).mean()
    assert straightened > 0.99 > raw + 0.1, (raw, straightened)


# --------------------------------------------------------------- smoothing


def test_smoothing_zeroth_order_matches_a_monte_carlo_smoothed_gradient(base, images):
    x, y = images[0][:20], images[1][:20]
    sigma = 0.05
    view = SmoothedView(base, sigma=sigma, samples=256)
    torch.testing.assert_close(view(x.clone().requires_grad_(True)).detach(), base(x), rtol=0, atol=0)
    estimate = input_gradient(view, x, y)
    torch.manual_seed(1)
    noisy = x.unsqueeze(0) + sigma * torch.randn(64, *x.shape)
    xs = noisy.flatten(0, 1).requires_grad_(True)
    # by hand: the gradient of the smoothed loss-weighted outputs, autograd averaged over noise
    weights = torch.softmax(base(x), 1) - F.one_hot(y, 10)
    (reference,) = torch.autograd.grad((base(xs).view(64, 20, 10) * weights).sum(), xs)
    reference = reference.view(64, *x.shape).mean(0)
    # a 256-sample estimate in 784 dimensions reaches a cosine near sqrt(n / (n + d)) = 0.5 at best;
    # an unrelated direction gives about 1 / sqrt(d) = 0.04
    assert cosine(estimate, reference).mean() > 0.25


def test_smoothing_recovers_a_gradient_where_autograd_has_none(base, images):
    model = zoo("numpy_round_trip", base)
    x, y = images[0][:40], images[1][:40]
    gradient = input_gradient(SmoothedView(model, samples=64), x, y)
    truth = input_gradient(base, x, y)  # a median filter is close to the identity on MNIST digits
    # 64 samples in 784 dimensions: at best about sqrt(64 / 848) = 0.27; unrelated: about 0.04
    assert cosine(gradient, truth).mean() > 0.1
    with pytest.raises(InvalidParameterError, match="sigma"):
        SmoothedView(model, sigma=0)
    with pytest.raises(InvalidParameterError, match="estimator"):
        SmoothedView(model, estimator="finite")


# --------------------------------------------------------------- logits


def test_log_probability_view_gives_the_logits_gradient_back(base, images):
    model = zoo("softmax_output", base)
    x, y = images[0][:20], images[1][:20]
    view = LogProbabilityView(model)
    torch.testing.assert_close(view(x), F.log_softmax(base(x), 1), rtol=1e-4, atol=1e-4)
    assert torch.equal(view(x).argmax(1), model(x).argmax(1))
    expected = input_gradient(base, x, y)
    assert cosine(input_gradient(view, x, y), expected).min() > 0.99


def test_normalized_logits_view_unsaturates_cross_entropy(base, images):
    model = zoo("scaled_logits", base)
    x, y = images[0][:20], images[1][:20]
    ok = base(x).argmax(1) == y
    assert input_gradient(model, x[ok], y[ok]).abs().sum() == 0  # saturated: exactly zero
    view = NormalizedLogitsView(model)
    assert torch.equal(view(x).argmax(1), model(x).argmax(1))
    spread = base(x).std(1, keepdim=True)
    xs = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(F.cross_entropy(base(xs) / spread, y, reduction="sum"), xs)
    assert cosine(input_gradient(view, x, y), expected).min() > 0.99


# --------------------------------------------------------------- surrogate


def test_surrogate_is_distilled_from_outputs_and_transfers(base, images):
    model = zoo("numpy_round_trip", base)
    x, y = images
    # The cost is counted, not timed: the model is queried once on x and its 8 noisy copies (the
    # documented (copies + 1) * len(x) images), and the surrogate sees those images 5 times in training
    # and once more to measure its agreement.
    forwarded: list[tuple[nn.Module, int]] = []
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda module, inputs, output: forwarded.append((module, inputs[0].shape[0])))
    try:
        surrogate = distill_surrogate(model, x, seed=0)
    finally:
        hook.remove()
    images_through = lambda net: sum(count for module, count in forwarded if module is net)  # noqa: E731
    assert images_through(model) == 9 * len(x)
    assert images_through(surrogate) == (5 + 1) * 9 * len(x)
    assert surrogate.agreement > 0.8
    view = SurrogateView(model, surrogate)
    torch.testing.assert_close(view(x.clone().requires_grad_(True)).detach(), model(x), rtol=0, atol=1e-5)
    adaptive = correct(model, pgd(view, x, y, 0.3, steps=10, loss="margin"), y)
    assert adaptive.mean() < correct(model, x, y).mean() - 0.3
    with pytest.raises(InvalidParameterError, match="copies"):
        distill_surrogate(model, x, copies=-1)


# --------------------------------------------------------------- the plan


def diagnosis_with(*flags: str, noise: float | None = None):
    from shieldkit.diagnosis import CHECKS, Diagnosis, Finding

    findings = tuple(Finding(c, c in flags, 1.0 if c in flags else 0.0, 0.0, 0.0, "") for c in CHECKS)
    return Diagnosis(findings, noise, 64, 16)


def test_plan_orders_remedies_from_the_findings_and_ends_with_the_score_based_attack():
    names = lambda d: [r.name for r in plan_remedies(d)]  # noqa: E731
    assert names(diagnosis_with()) == ["direct", "score_based"]
    assert names(diagnosis_with("zero_gradients")) == ["auto_bpda", "smoothing", "surrogate", "score_based"]
    assert names(diagnosis_with("random_forward", noise=1.0)) == ["eot", "score_based"]
    assert names(diagnosis_with("probability_outputs")) == ["log_probabilities", "score_based"]
    assert names(diagnosis_with("shattered_gradients")) == ["auto_bpda_identity", "smoothing", "surrogate", "score_based"]
    assert names(diagnosis_with("input_seeded_randomness"))[:2] == ["jitter_smoothing", "smoothing"]
    assert names(diagnosis_with("deployed_precision", "missing_gradients"))[:2] == ["twin", "auto_bpda"]
    assert names(diagnosis_with("deployed_precision")) == ["twin", "score_based"]
    plan = plan_remedies(diagnosis_with("random_forward", "probability_outputs", noise=1.0))
    assert plan[0].settings.draws == 16 and plan[0].settings.loss == "margin"
    assert "random_forward" in plan[0].reason and "probability_outputs" in plan[0].reason
    fallback = plan[-1]  # on a randomised model, Square's loss is averaged over draws (a view), else the model itself
    assert fallback.build is not None and fallback.settings.draws == 8
    assert plan_remedies(diagnosis_with("zero_gradients"))[-1].build is None
    assert fallback.settings.attack == "square" and fallback.settings.queries == 5000
    assert plan[0].settings.early_stop is False and plan_remedies(diagnosis_with())[0].settings.early_stop
    shieldkit.create_attack(fallback.settings.attack, eps=0.1, **fallback.settings.params())
    with pytest.raises(InvalidParameterError, match="max_draws"):
        plan_remedies(diagnosis_with(), max_draws=0)
    with pytest.raises(InvalidParameterError, match="diagnosis"):
        plan_remedies({"flags": ()})


# --------------------------------------------------------------- end to end


def escalated_accuracy(model, x, y, eps: float, judge_draws: int) -> tuple[torch.Tensor, list[str]]:
    """Native PGD through every planned view, cascaded over the samples still robust; per-sample worst case."""
    from shieldkit.diagnosis import diagnose

    plan = plan_remedies(diagnose(model, x, y, seed=0), smoothing_samples=32)
    worst = correct(model, x, y, judge_draws)
    best_x = x.clone()
    broke = []
    for remedy in plan:
        pending = (worst > 0).nonzero().squeeze(1)
        if remedy.settings.attack != "pgd" or pending.numel() == 0:
            continue  # score_based: settings only here (5000 queries per image is bench/ material)
        view = remedy.view(model, x[pending])
        x_adv = pgd(view, x[pending], y[pending], eps, steps=20, restarts=1, **remedy.settings.params())
        now = correct(model, x_adv, y[pending], judge_draws)
        better = now < worst[pending]
        if bool(better.any()):
            broke.append(remedy.name)
        worst[pending[better]] = now[better]
        best_x[pending[better]] = x_adv[better]
    return correct(model, best_x, y, judge_draws, seed=321), broke


def _end_to_end(name: str):
    # tests/e2e/test_evaluate_zoo.py makes the same comparison through the whole default evaluation (in CI);
    # this one, remedy views driven by hand, is kept for debugging a remedy on its own
    return pytest.param(name, marks=[pytest.mark.slow])


@pytest.mark.parametrize("name", [_end_to_end(name) for name in REFERENCES])
def test_escalation_reaches_the_hand_written_adaptive_attack(base, images, name):
    x, y = images
    model = zoo(name, base)
    differentiate, draws = REFERENCES[name]
    forward = model if differentiate is None else differentiate(base)
    judge_draws = 4 if name in RANDOM_JUDGED else 1
    for eps in (0.1, 0.3):
        reference = reference_attack(forward, model, x, y, eps, draws, judge_draws).mean().item()
        escalated, broke = escalated_accuracy(model, x, y, eps, judge_draws)
        assert escalated.mean().item() <= reference + 0.05, (name, eps, reference, escalated.mean().item(), broke)
