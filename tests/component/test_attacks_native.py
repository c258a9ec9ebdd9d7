"""The native attacks on a real MNIST CNN, their properties under hypothesis, and the conformance kit.

Uses the session fixtures ``mnist_model`` (a CNN trained one epoch on 20,000 real
MNIST images) and ``mnist_test`` from tests/conftest.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shieldkit as sk
from shieldkit.attacks import FGSM, PGD, DeepFool, HueSaturation, Noise, Semantic
from shieldkit.attacks.hue_saturation import grid_shifts, hsv_to_rgb, rgb_to_hsv
from shieldkit.attacks.semantic import negative_image
from shieldkit.core.errors import InvalidInputError, InvalidParameterError
from shieldkit.core.threat import norm_of
from shieldkit.testing import check_attack, tiny_model

NATIVE = (FGSM, Noise, Semantic, HueSaturation, PGD, DeepFool)


@pytest.fixture(scope="module")
def mnist_batch(mnist_model, mnist_test):
    """200 test images the model classifies correctly."""
    x, y = mnist_test.x[:400], mnist_test.y[:400]
    with torch.no_grad():
        correct = mnist_model(x).argmax(1) == y
    assert correct.sum() >= 200
    return x[correct][:200], y[correct][:200]


@pytest.fixture(scope="module")
def mnist_first(mnist_test):
    """The first 200 test images, correct or not (for accuracy curves)."""
    return mnist_test.x[:200], mnist_test.y[:200]


def _accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


# ------------------------------------------------------------------ DeepFool


def test_deepfool_fools_mnist_in_few_iterations_with_small_perturbations(mnist_model, mnist_batch):
    """Measured on these 200 images (bench/results/attack_tests.md, quoted in docs/attacks.md): 100% fooled,
    2.12 iterations on average (SE 0.05), mean rho = ||r||_2 / ||x||_2 = 0.222 (SE 0.007). Bounds: 3 SE
    (iterations <= 2.27, rho in 0.201-0.244); fooled >= 99% is tighter than 3 binomial SE at p = 99.5%
    (98.5%)."""
    x, y = mnist_batch
    result = DeepFool().run(mnist_model, x, y)
    iterations = result.info["iterations"]
    rho = (result.l2 / x.flatten(1).norm(dim=1)).mean().item()
    assert result.success_rate >= 0.99
    assert iterations.shape == (200,) and iterations.dtype == torch.int64
    assert iterations.float().mean().item() <= 2.27
    assert 0.201 <= rho <= 0.244
    assert result.backwards >= 1 and result.forwards >= 2


def test_deepfool_linf_and_given_eps(mnist_model, mnist_batch):
    """Measured (bench/results/attack_tests.md, 32 images): 100% fooled unbounded, 3.1% within eps=0.05.
    >= 95% is tighter than 3 binomial SE below the figure (90.8%, p taken as 1 - 1/n)."""
    x, y = mnist_batch[0][:32], mnist_batch[1][:32]
    free = DeepFool(norm="linf").run(mnist_model, x, y)
    assert free.success_rate >= 0.95
    capped = DeepFool(norm="linf", eps=0.05).run(mnist_model, x, y)
    assert capped.linf.max().item() <= 0.05 + 1e-6
    assert capped.success_rate < free.success_rate


def test_deepfool_leaves_misclassified_samples_alone(mnist_model, mnist_batch):
    x, y = mnist_batch[0][:8], mnist_batch[1][:8]
    wrong = (y + 1) % 10
    result = DeepFool().run(mnist_model, x, wrong)
    assert torch.equal(result.info["iterations"], torch.zeros(8, dtype=torch.int64))
    assert torch.equal(result.x_adv, x)


def _reference_deepfool(model, x, y, norm="l2", steps=50, overshoot=0.02, bounds=(0.0, 1.0)):
    """DeepFool as the paper and ART write it, by hand: every class, full (unmasked) gradients, each step
    clipped to the bounds, the overshoot applied once to the total perturbation at the end."""
    point, active = x.clone(), torch.ones(x.shape[0], dtype=torch.bool)
    for _ in range(steps):
        point.requires_grad_(True)
        logits = model(point)
        active = active & (logits.argmax(1) == y)
        if not active.any():
            break
        jacobian = torch.stack([torch.autograd.grad(logits[:, k].sum(), point, retain_graph=True)[0]
                                for k in range(logits.shape[1])], dim=1)  # [B, K, C, H, W]
        gaps = (logits - logits.gather(1, y[:, None])).detach()  # f_k - f_y
        normals = (jacobian - jacobian[torch.arange(len(y)), y][:, None]).flatten(2)
        sizes = normals.norm(dim=2) if norm == "l2" else normals.abs().sum(dim=2)
        distances = gaps.abs() / (sizes + 1e-8)
        distances[torch.arange(len(y)), y] = float("inf")
        nearest = distances.argmin(1)
        normal = normals[torch.arange(len(y)), nearest]
        gap = gaps.abs()[torch.arange(len(y)), nearest][:, None]
        if norm == "l2":
            step = (gap + 1e-4) / (normal.square().sum(1, keepdim=True) + 1e-8) * normal
        else:
            step = (gap + 1e-4) / (normal.abs().sum(1, keepdim=True) + 1e-8) * normal.sign()
        step = step.view_as(x) * active.view(-1, 1, 1, 1)
        point = (point.detach() + step).clamp(*bounds)
    return (x + (1 + overshoot) * (point.detach() - x)).clamp(*bounds)


@pytest.fixture(scope="module")
def mnist_300(mnist_model, mnist_test):
    """300 test images the model classifies correctly."""
    x, y = mnist_test.x[:400], mnist_test.y[:400]
    with torch.no_grad():
        correct = mnist_model(x).argmax(1) == y
    return x[correct][:300], y[correct][:300]


#: The bound on the geometric mean, over images both fool, of native DeepFool's perturbation size over the
#: hand-written reference's, per norm. bench/results/threshold_spread.md measures it on the session model under
#: seeds 0-4 (a fresh machine's model differs from this one about as much as another seed's): L2 0.94-0.99
#: (standard error up to 0.007), L-inf 1.01-1.05 (up to 0.006); each bound is the worst seed + 3 SE, rounded up.
#: Without its projection rounds DeepFool comes out at 1.019-1.035 (L2) and fails; in L-inf the rounds gain only
#: 1-5% (1.045-1.075 without them), so there the bound catches an attack that overshoots by 10% instead of 2%
#: (bench/check_thresholds.py).
DEEPFOOL_REFERENCE_BOUND = {"l2": 1.01, "linf": 1.07}


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_deepfool_perturbation_is_no_larger_than_the_reference(mnist_model, mnist_300, norm):
    """Minimal perturbation, per image: on 300 correctly classified MNIST images, both attacks fool at least
    99%, and on the images both fool, native DeepFool's perturbation is at most the hand-written reference's
    (L2; in geometric mean over images) or within 7% of it (L-inf, whose projection along sign(w) gains
    little). A paired figure: a median of each attack's sizes moved by 4% from one machine's model to
    another's (issue 27), the per-image ratio by well under 1%."""
    x, y = mnist_300
    result = DeepFool(norm=norm).run(mnist_model, x, y)
    reference = _reference_deepfool(mnist_model, x, y, norm=norm)
    with torch.no_grad():
        reference_fooled = mnist_model(reference).argmax(1) != y
    assert result.success_rate >= 0.99 and reference_fooled.float().mean().item() >= 0.99
    both = result.success & reference_fooled
    sizes = (result.l2 if norm == "l2" else result.linf)[both]
    ratio = (sizes / norm_of(reference - x, norm)[both]).log().mean().exp().item()
    assert ratio <= DEEPFOOL_REFERENCE_BOUND[norm], ratio


def test_deepfool_lands_just_past_the_boundary(mnist_model, mnist_300):
    """The final search puts the result at about (1 + overshoot) times the boundary's distance along its
    direction: 5% shorter, nearly every image is classified correctly again; 5% longer (clipped), still fooled.
    bench/results/attack_tests.md (deepfool_lands_just_past, n=300): 96.0% (SE 1.1%; figure - 3 SE: 92.6%) and
    100.0% (SE 0.3%; 99.0%)."""
    x, y = mnist_300
    result = DeepFool().run(mnist_model, x, y)
    delta = result.x_adv - x
    with torch.no_grad():
        shorter = mnist_model(x + 0.95 * delta).argmax(1) == y
        longer = mnist_model((x + 1.05 * delta).clamp(0, 1)).argmax(1) != y
    assert shorter.float().mean().item() >= 0.95
    assert longer.float().mean().item() >= 0.99


# --------------------------------------------------------------- FGSM and PGD


def test_fgsm_and_pgd_40_accuracy_falls_with_eps_and_pgd_beats_fgsm(mnist_model, mnist_first):
    """Measured on these 200 images (bench/results/attack_tests.md): accuracy at eps 0 / 0.1 / 0.2 / 0.3,
    FGSM 99.0 / 86.0 / 35.0 / 4.5%, PGD-40 99.0 / 73.0 / 2.0 / 0.0%. Bounds are 3 binomial SE on n=200:
    FGSM at 0.3 <= 4.5 + 3 x 1.5 = 8.9%; PGD at 0.3 <= 0 + 3 x 0.5 = 1.5% (p taken as 1/n); at 0.2 FGSM - PGD
    = 33 points >= 33 - 3 x 3.4 = 22.9 (SE of FGSM's accuracy)."""
    x, y = mnist_first
    curves = {"fgsm": [_accuracy(mnist_model, x, y)], "pgd": [_accuracy(mnist_model, x, y)]}
    for eps in (0.1, 0.2, 0.3):
        curves["fgsm"].append(_accuracy(mnist_model, FGSM(eps=eps)(mnist_model, x, y), y))
        # Early stopping only adds successes (tested below); the headline eps=0.3 run is plain PGD-40.
        pgd = PGD(eps=eps, steps=40, step_size=0.01, early_stop=eps < 0.3, seed=0)
        curves["pgd"].append(_accuracy(mnist_model, pgd(mnist_model, x, y), y))
    fgsm, pgd = curves["fgsm"], curves["pgd"]
    assert fgsm[-1] <= 0.089
    assert pgd[-1] <= 0.015
    for curve in (fgsm, pgd):
        assert all(later <= earlier for earlier, later in zip(curve, curve[1:])), curves
    assert all(p <= f for p, f in zip(pgd, fgsm)), curves
    assert pgd[2] <= fgsm[2] - 0.229, curves  # much stronger where it matters


@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 1.5)])
def test_targeted_fgsm_lowers_the_target_class_loss(mnist_model, mnist_batch, norm, eps):
    """Measured (bench/results/attack_tests.md, 100 images): the target's loss falls on 100% of them for both
    norms; 97% is 3 binomial SE below (p taken as 99%)."""
    x, y = mnist_batch[0][:100], mnist_batch[1][:100]
    target = (y + 3) % 10
    x_adv = FGSM(eps=eps, norm=norm).run(mnist_model, x, y, target=target).x_adv
    with torch.no_grad():
        before = F.cross_entropy(mnist_model(x), target, reduction="none")
        after = F.cross_entropy(mnist_model(x_adv), target, reduction="none")
    assert after.mean() < before.mean()
    assert (after < before).float().mean().item() >= 0.97


@pytest.mark.parametrize("loss", ["ce", "margin", "dlr"])
def test_targeted_pgd_reaches_the_target_with_every_loss(mnist_model, mnist_batch, loss):
    """Targeted success on these 32 images over the session model's seeds 0-4 (one thread; issue 27: another
    machine's model is as different as another seed's): ce 84-100% (mean 94%), margin 81-97% (88%), dlr 75-91%
    (81%); untargeted 100% on every seed. The bounds are the mean over seeds minus 3 standard deviations across
    them (ce 76%, margin 70%, dlr 64%), rounded down; a loss with the wrong sign reaches almost no target."""
    x, y = mnist_batch[0][:32], mnist_batch[1][:32]
    target = (y + 1) % 10
    result = PGD(eps=0.3, steps=20, step_size=0.03, loss=loss, seed=0).run(mnist_model, x, y, target=target)
    assert result.success_rate >= {"ce": 0.75, "margin": 0.7, "dlr": 0.6}[loss]
    untargeted = PGD(eps=0.3, steps=20, step_size=0.03, loss=loss, seed=0).run(mnist_model, x, y)
    assert untargeted.success_rate >= 0.95


def test_pgd_restarts_and_early_stop_only_add_successes(mnist_model, mnist_batch):
    """That restarts and early stopping never remove a success is structural, and is what is held here. How
    many restarts add is the model's: 0-3 images of these 64 on the session model under seeds 0-4 (0 on seeds
    0-2: PGD-10 has converged on this CNN), so no count is asserted (issue 27: the old "adds at least one" was
    one machine's model)."""
    x, y = mnist_batch[0][:64], mnist_batch[1][:64]
    common = dict(eps=0.1, steps=10, step_size=0.02, seed=3)
    single = PGD(**common).run(mnist_model, x, y)
    restarted = PGD(restarts=3, **common).run(mnist_model, x, y)
    early = PGD(early_stop=True, **common).run(mnist_model, x, y)
    assert bool((restarted.success | ~single.success).all())
    assert bool((early.success | ~single.success).all())
    assert restarted.backwards > single.backwards
    stopped = early.success
    assert early.l2[stopped].mean() < single.l2[stopped].mean()  # stopped as soon as fooled


class _NoisyInput(torch.nn.Module):
    """A randomised model: the CNN on ``x + 0.5 * N(0, 1)``, a fresh draw from torch's RNG on every forward
    (bench/bench_attack_tests.py measures the same model)."""

    def __init__(self, base, sigma=0.5):
        super().__init__()
        self.base, self.sigma = base, sigma

    def forward(self, x):
        return self.base(x + self.sigma * torch.randn_like(x))


def _expected_probabilities(model, x, draws=32):
    """The expected model's class probabilities: the mean softmax of ``draws`` seeded forward passes."""
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        return torch.stack([model(x).softmax(1) for _ in range(draws)]).mean(0)


def test_pgd_eot_steps_along_the_mean_gradient_of_the_draws(mnist_model, mnist_batch):
    """One L2 step of PGD with eot=8 is the normalised mean of the 8 gradients the seeded draws give, computed
    here by hand; a single draw's gradient is far from the mean of many (256 further draws), the mean of 8 close.
    Measured (bench/results/attack_tests.md, these 8 images): cosine to the 256-draw mean 0.489 on average for
    one draw (SE 0.052), 0.806 for the mean of 8 (SE 0.017), higher on every image; bounds 3 SE: <= 0.646 and
    >= 0.755."""
    noisy = _NoisyInput(mnist_model).eval()
    x, y = mnist_batch[0][:8], mnist_batch[1][:8]
    # Wide bounds and a step shorter than eps: neither the clipping nor the projection touches the step.
    attack = PGD(eps=1.0, norm="l2", steps=1, step_size=0.5, random_start=False, eot=8, bounds=(-1.0, 2.0), seed=3)
    result = attack.run(noisy, x, y)
    assert result.backwards == 8
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)  # the attack's seed: the same draws, in the same order
        draws = []
        for _ in range(8 + 256):
            point = x.clone().requires_grad_(True)
            (gradient,) = torch.autograd.grad(F.cross_entropy(noisy(point), y, reduction="sum"), point)
            draws.append(gradient.flatten(1))
    draws = torch.stack(draws)
    mean = draws[:8].mean(0)
    step = (result.x_adv - x).flatten(1) / 0.5
    assert torch.allclose(step, mean / mean.norm(dim=1, keepdim=True), atol=1e-5)
    reference = draws[8:].mean(0)
    one_draw = F.cosine_similarity(draws[0], reference, dim=1)
    eight_draws = F.cosine_similarity(mean, reference, dim=1)
    assert one_draw.mean().item() <= 0.646, one_draw
    assert eight_draws.mean().item() >= 0.755, eight_draws
    assert (eight_draws > one_draw).all(), (one_draw, eight_draws)


def test_pgd_eot_beats_a_single_draw_on_a_randomised_model(mnist_model, mnist_batch):
    """At equal steps, PGD with eot=8 brings the expected model (mean softmax of 32 draws) lower than eot=1.

    Measured (bench/results/attack_tests.md, these 64 images): expected-model accuracy 73.4% clean, 14.1%
    after eot=1, 6.2% after eot=8. Over the session model's seeds 0-4 (bench/results/seed_spread.md) eot=1
    leaves 7.8-15.6% and eot=8 0-7.8 points less (eot=1 already breaks most images on some models, so the
    gain is no figure to hold): eot=8 must leave no more than eot=1, one image of slack. The paired figure
    that holds on every seed: the expected-model loss is higher with eot=8 on 100% of the images
    (>= 95.3% at 3 binomial SE, p taken as 1 - 1/n).
    """
    noisy = _NoisyInput(mnist_model).eval()
    x, y = mnist_batch[0][:64], mnist_batch[1][:64]
    correct, loss = {}, {}
    for eot in (1, 8):
        result = PGD(eps=0.15, steps=10, step_size=0.03, eot=eot, seed=0).run(noisy, x, y)
        assert result.backwards == 10 * eot
        probabilities = _expected_probabilities(noisy, result.x_adv)
        correct[eot] = probabilities.argmax(1) == y
        loss[eot] = F.nll_loss(probabilities.clamp_min(1e-12).log(), y, reduction="none")
    gain = (correct[1].float().mean() - correct[8].float().mean()).item()
    higher = (loss[8] > loss[1]).float().mean().item()
    assert gain >= -1 / len(y), (gain, correct)
    assert higher >= 0.953, (higher, loss)


def test_pgd_default_step_size_is_a_quarter_of_eps(mnist_model, mnist_batch):
    x, y = mnist_batch[0][:4], mnist_batch[1][:4]
    x_adv = PGD(eps=0.2, steps=1, random_start=False)(mnist_model, x, y)
    moved = (x_adv - x).abs()
    assert moved.max().item() == pytest.approx(0.05, abs=1e-6)


# ------------------------------------------------------- noise and semantic


def test_noise_restarts_keep_a_fooling_draw(mnist_model, mnist_first):
    x, y = mnist_first
    once = Noise(eps=0.4, seed=0).run(mnist_model, x, y)
    many = Noise(eps=0.4, restarts=10, seed=0).run(mnist_model, x, y)
    assert bool((many.success | ~once.success).all())
    assert many.success.sum() >= once.success.sum()
    assert many.backwards == 0
    gaussian = Noise(eps=0.4, distribution="gaussian", seed=0).run(mnist_model, x, y)
    assert gaussian.linf.max().item() <= 0.4 + 1e-6
    assert gaussian.l2.min().item() > 0


def test_uniform_l2_noise_fills_the_ball(mnist_model, mnist_first):
    x, y = mnist_first[0][:50] * 0 + 0.5, mnist_first[1][:50]  # mid-grey: no clipping
    result = Noise(eps=2.0, norm="l2", seed=0).run(mnist_model, x, y)
    assert result.l2.max().item() <= 2.0 + 1e-5
    assert result.l2.min().item() > 1.9  # uniform in a 784-d ball lies near its surface


@given(
    x=st.integers(1, 4).map(lambda b: torch.rand(b, 2, 3, 3)),
    bounds=st.sampled_from([(0.0, 1.0), (-1.0, 1.0), (0.0, 255.0)]),
)
@settings(max_examples=20, deadline=None)
def test_negative_of_negative_is_the_image(x, bounds):
    low, high = bounds
    x = low + (high - low) * x
    twice = negative_image(negative_image(x, bounds), bounds)
    assert torch.allclose(twice, x, atol=1e-5 * (high - low))


def test_semantic_attack_negates_and_fools_mnist(mnist_model, mnist_batch):
    x, y = mnist_batch[0][:100], mnist_batch[1][:100]
    result = Semantic().run(mnist_model, x, y)
    assert torch.allclose(result.x_adv, 1 - x)
    assert torch.allclose(Semantic()(mnist_model, result.x_adv), x, atol=1e-6)
    assert torch.equal(result.info["fooled"], result.success)
    # MNIST CNNs do not recognise negative digits: 58% fooled (bench/results/attack_tests.md, 100 images);
    # 50% is tighter than 3 binomial SE below it (43.2%).
    assert result.success_rate >= 0.5
    centred = Semantic(variant="centred")(mnist_model, x, y)
    mean = x.mean(dim=(2, 3), keepdim=True)
    assert torch.allclose(centred, (2 * mean - x).clamp(0, 1))


def test_hsv_round_trip_and_hue_saturation_keeps_value():
    torch.manual_seed(0)
    rgb = torch.rand(5, 3, 6, 6)
    assert torch.allclose(hsv_to_rgb(rgb_to_hsv(rgb)), rgb, atol=1e-5)
    model = tiny_model(3, 8).eval()
    x = torch.rand(8, 3, 8, 8)
    result = HueSaturation(queries=200, seed=0).run(model, x)
    # 7 of 8 fooled (87.5%, bench/results/attack_tests.md); 3 binomial SE on n=8 below it: 52.4%.
    assert result.success_rate >= 0.6
    value_before, value_after = rgb_to_hsv(x)[:, 2], rgb_to_hsv(result.x_adv)[:, 2]
    assert torch.allclose(value_before, value_after, atol=1e-5)
    untouched = ~result.success
    assert torch.equal(result.x_adv[untouched], x[untouched])
    assert result.info["queries_used"].max().item() <= 200
    grid = HueSaturation(queries=50, search="grid")
    assert torch.equal(grid(model, x), grid(model, x))
    hue, saturation = grid_shifts(50)
    assert len(hue) == 50 and not bool(((hue == 0) & (saturation == 0)).any())
    assert saturation.abs().tolist() == sorted(saturation.abs().tolist())


def test_hue_saturation_needs_colour_images():
    with pytest.raises(InvalidInputError, match="3, H, W"):
        HueSaturation(queries=5)(tiny_model(1, 8).eval(), torch.rand(2, 1, 8, 8))


@pytest.mark.parametrize(
    "cls, params, culprit",
    [
        (PGD, {"loss": "hinge"}, "loss"),
        (PGD, {"steps": 0}, "steps"),
        (PGD, {"step_size": -0.1}, "step_size"),
        (PGD, {"random_start": "yes"}, "random_start"),
        (PGD, {"eot": 0}, "eot"),
        (DeepFool, {"candidates": 1}, "candidates"),
        (DeepFool, {"overshoot": -1.0}, "overshoot"),
        (Noise, {"distribution": "laplace"}, "distribution"),
        (Noise, {"sigma": -1.0}, "sigma"),
        (Semantic, {"variant": "inverted"}, "variant"),
        (HueSaturation, {"search": "bayes"}, "search"),
        (HueSaturation, {"queries": 0}, "queries"),
    ],
)
def test_bad_parameters_name_the_culprit(cls, params, culprit):
    with pytest.raises(InvalidParameterError, match=culprit):
        cls(**params)


def test_dlr_needs_enough_classes():
    model = tiny_model(1, 8, num_classes=3).eval()
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(InvalidInputError, match="dlr"):
        PGD(loss="dlr", steps=1)(model, x, target=torch.tensor([0, 1]))


# ------------------------------------------------------------ properties

_PROPERTY_MODELS = {1: tiny_model(1, 8).eval(), 3: tiny_model(3, 8).eval()}
_SMALL = {
    FGSM: {},
    Noise: {"restarts": 2},
    Semantic: {},
    HueSaturation: {"queries": 10},
    PGD: {"steps": 3},
    DeepFool: {"steps": 5},
}


@pytest.mark.parametrize("cls", NATIVE, ids=lambda c: c.family)
@given(data=st.data())
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_budget_bounds_input_and_seed_hold(cls, data):
    norm = data.draw(st.sampled_from(cls.norms), label="norm")
    batch = data.draw(st.integers(1, 5), label="batch")
    if cls.bounded:
        eps = data.draw(st.floats(0.0, 1.0 if norm == "linf" else 4.0), label="eps")
    else:
        eps = data.draw(st.one_of(st.none(), st.floats(0.0, 2.0)), label="eps")
    targeted = cls.targeted and data.draw(st.booleans(), label="targeted")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    channels = 3 if cls is HueSaturation else 1
    model = _PROPERTY_MODELS[channels]
    x = torch.rand(batch, channels, 8, 8, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        y = model(x).argmax(1)
    target = (y + 1 + seed % 9) % 10 if targeted else None
    x_before = x.clone()

    attack = cls(eps=eps, norm=norm, seed=seed, **_SMALL[cls])
    result = attack.run(model, x, y, target=target)

    assert torch.equal(x, x_before)
    assert result.x_adv.min().item() >= 0.0 and result.x_adv.max().item() <= 1.0
    if eps is not None:
        assert norm_of(result.x_adv - x, norm).max().item() <= eps * (1 + 1e-5) + 1e-6
    again = cls(eps=eps, norm=norm, seed=seed, **_SMALL[cls]).run(model, x, y, target=target)
    assert torch.equal(result.x_adv, again.x_adv)


# ---------------------------------------------------------- conformance kit


@pytest.mark.parametrize("cls", NATIVE, ids=lambda c: c.family)
def test_conformance_with_default_parameters(cls):
    shape = (6, 3, 16, 16) if cls is HueSaturation else (6, 1, 16, 16)
    report = check_attack(cls, shape=shape)
    assert set(report["norms"]) == set(cls.norms)


def test_registered_under_their_families():
    for cls in NATIVE:
        info = sk.attack_info(cls.family)
        assert info["name"] == f"{cls.family}.native"
        assert info["bounded"] == cls.bounded and info["access"] == cls.access


@pytest.mark.parametrize(("name", "params"), [("fgsm", {"eps": 0.2}), ("pgd", {"eps": 0.2, "steps": 5}),
                                              ("pgd", {"eps": 2.0, "norm": "l2", "steps": 5}),
                                              ("deepfool", {"steps": 10})])
def test_native_attacks_run_in_half_precision_within_their_budget(name, params, mnist_model, mnist_test):
    """float16 rounds an ulp (1e-3 at 1.0) past eps: the contract's tolerance follows the dtype, the output
    is still inside the ball in float16, and the attack works about as well as in float32.

    Measured (bench/results/attack_tests.md, 64 images): FGSM and both PGDs fool within one image (1.6
    points) of float32; bounds |difference| <= 1.6 + 3 paired SE: 9.7 points (FGSM), 6.2 (PGD)."""
    import copy

    model = copy.deepcopy(mnist_model).half()
    x, y = mnist_test.x[:64], mnist_test.y[:64]
    result = sk.create_attack(name, seed=0, **params).run(model, x.half(), y)
    assert result.x_adv.dtype == torch.float16
    eps = torch.tensor(params.get("eps", float("inf")), dtype=torch.float16).item()
    norms = result.linf if params.get("norm", "linf") == "linf" else result.l2
    assert norms.max().item() <= eps * (1 + 1e-3)
    assert result.x_adv.min().item() >= 0 and result.x_adv.max().item() <= 1
    full = sk.create_attack(name, seed=0, **params).run(mnist_model, x, y)
    if name == "deepfool":
        # DeepFool stops just past the boundary, where float16 rounding can put it back: 54/64 fooled
        # (84.4%, bench/results/attack_tests.md; 3 binomial SE below: 70.8%) against 64/64 in float32;
        # its perturbations stay as small (median L2 ratio 1.000).
        assert result.success_rate >= 0.75 and result.l2.median() <= 1.1 * full.l2.median()
    else:
        bound = 0.097 if name == "fgsm" else 0.062
        assert abs(result.success_rate - full.success_rate) <= bound
