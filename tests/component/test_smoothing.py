"""Randomised smoothing (Cohen et al. 2019) and noise training, on a small CNN trained on real MNIST.

A module fixture trains ``mnist_cnn(width=8)`` with ``noise_training`` at sigma=0.25
on 3,000 seeded MNIST training images and certifies 100 seeded test images once;
the tests check that certificate against PREDICT, against an independent
Clopper-Pearson bound (scipy) and against a CERTIFY written here from the paper.
"""

from __future__ import annotations

import json
import math

import pytest
import scipy.stats
import torch
from torch import nn

from shieldkit.core.defense import ABSTAIN
from shieldkit.core.errors import InvalidParameterError
from shieldkit.defenses.noise_training import NoiseTraining
from shieldkit.defenses.randomized_smoothing import (
    RandomizedSmoothing,
    binomial_tail,
    lower_confidence_bound,
    upper_confidence_bound,
)

SIGMA = 0.25
N0, N, ALPHA = 50, 200, 0.001
RADII = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread while this module runs (restored after).

    Certification is many small forwards and a bisection over small tensors: on a
    shared 2-core machine two threads spin on each other and made them 10-40x slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(noisy_cnn):
    """The session's CNN trained under N(0, 0.25^2) noise (conftest.py)."""
    return noisy_cnn


@pytest.fixture(scope="module")
def images():
    from shieldkit.data import load

    test = load("mnist", split="test").subset(100, seed=1)
    return test.x, test.y


@pytest.fixture(scope="module")
def certificate(trained, images):
    x, _ = images
    return RandomizedSmoothing(sigma=SIGMA, seed=0).certify(trained, x, n0=N0, n=N, alpha=ALPHA)


def certified_accuracy(certificate, y, radius: float) -> float:
    correct = (certificate.predictions == y) & ~certificate.abstained & (certificate.radii >= radius)
    return correct.float().mean().item()


# ------------------------------------------------------------ (a), (b): accuracy


def test_certified_accuracy_at_zero_matches_the_smoothed_clean_accuracy(trained, images, certificate):
    x, y = images
    predictions = RandomizedSmoothing(sigma=SIGMA, seed=1).predict(trained, x, n=N, alpha=ALPHA)
    clean = ((predictions == y) & (predictions != ABSTAIN)).float().mean().item()
    assert abs(certified_accuracy(certificate, y, 0.0) - clean) <= 0.02 + 1e-9, (certificate, clean)


def test_certified_accuracy_falls_with_the_radius_and_starts_well_above_chance(images, certificate):
    _, y = images
    curve = [certified_accuracy(certificate, y, r) for r in RADII]
    assert all(a >= b for a, b in zip(curve, curve[1:])), curve
    assert curve[0] >= 0.8, curve  # chance is 0.1
    # n draws can certify at most sigma * Phi^-1(alpha^(1/n)) (all n votes for the class): 0.456 here
    ceiling = SIGMA * scipy.stats.norm.ppf(ALPHA ** (1 / N))
    assert certificate.radii.max().item() <= ceiling + 1e-6
    assert (certificate.radii[certificate.abstained] == 0).all()
    assert (certificate.radii[~certificate.abstained] > 0).all()


# ------------------------------------------------------ (c): the bound, by scipy


def test_clopper_pearson_bound_matches_scipy():
    for n in (1, 7, 100, 1000, 10000):
        ks = sorted({0, 1, n // 3, n // 2, n - 1, n} - {-1})
        k = torch.tensor(ks)
        for alpha in (1e-6, 1e-3, 0.05, 0.5, 0.9):
            got = lower_confidence_bound(k, n, alpha)
            expected = [scipy.stats.beta.ppf(alpha, j, n - j + 1) if j > 0 else 0.0 for j in ks]
            assert torch.allclose(got, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-6), (n, alpha)
            upper = upper_confidence_bound(k, n, alpha)
            expected = [scipy.stats.beta.ppf(1 - alpha, j + 1, n - j) if j < n else 1.0 for j in ks]
            assert torch.allclose(upper, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-6), (n, alpha)


def test_binomial_tail_matches_scipy():
    for n in (1, 10, 1000):
        k = torch.tensor(sorted({0, 1, n // 2, n}))
        for p in (0.01, 0.3, 0.5, 0.97):
            got = binomial_tail(k, n, torch.full((len(k),), p, dtype=torch.float64))
            expected = torch.tensor([scipy.stats.binom.sf(j - 1, n, p) for j in k.tolist()], dtype=torch.float64)
            assert torch.allclose(got, expected, rtol=1e-9, atol=1e-12), (n, p)


def test_radius_is_sigma_times_the_normal_quantile():
    p = torch.tensor([0.5, 0.51, 0.6, 0.9, 0.999, 0.999999], dtype=torch.float64)
    for sigma in (0.12, 0.25, 1.0):
        got = RandomizedSmoothing(sigma=sigma).radius(p)
        expected = torch.tensor(sigma * scipy.stats.norm.ppf(p.numpy()), dtype=torch.float64)
        assert torch.allclose(got, expected, rtol=0, atol=1e-6), sigma


# ------------------------------------------- (d): a CERTIFY written from the paper


def reference_certify(model: nn.Module, x: torch.Tensor, *, sigma: float, n0: int, n: int, alpha: float, seed: int):
    """Cohen et al.'s Algorithm 1, one image at a time, with its own noise draws.

    Returns per image the prediction (``ABSTAIN`` = -1), the radius and the ``n`` votes per class.
    """
    generator = torch.Generator().manual_seed(seed)

    def votes(image: torch.Tensor, draws: int) -> torch.Tensor:
        noise = torch.randn((draws, *image.shape), generator=generator) * sigma
        with torch.no_grad():
            classes = model(image[None] + noise).argmax(dim=1)
        return torch.bincount(classes, minlength=10)

    predictions, radii, counts = [], [], []
    for image in x:
        chosen = int(votes(image, n0).argmax())
        estimate = votes(image, n)
        k = int(estimate[chosen])
        p_lower = scipy.stats.beta.ppf(alpha, k, n - k + 1) if k > 0 else 0.0
        certified = p_lower >= 0.5
        predictions.append(chosen if certified else ABSTAIN)
        radii.append(sigma * scipy.stats.norm.ppf(p_lower) if certified else 0.0)
        counts.append(estimate)
    return torch.tensor(predictions), torch.tensor(radii), torch.stack(counts)


def radius_of_count(k: int, n: int = N, alpha: float = ALPHA, sigma: float = SIGMA) -> float:
    p_lower = scipy.stats.beta.ppf(alpha, k, n - k + 1) if k > 0 else 0.0
    return sigma * scipy.stats.norm.ppf(p_lower) if p_lower >= 0.5 else 0.0


def test_agrees_with_a_hand_written_certify(trained, images, certificate):
    """Same predictions on every non-borderline image, radii within Monte-Carlo error.

    The two runs draw independent noise (seeds 0 and 12345), so the top class's
    count ``k`` in ``n`` draws differs between them by a difference of two
    binomials, of standard deviation ``sqrt(2 n p (1 - p))``. The tolerance is
    4.5 of those (plus one vote for rounding), with ``p = (k + 1) / (n + 2)``
    from the reference so that ``k = n`` still gets a spread: a false failure
    has probability about 7e-6 per image. The radius is monotone in ``k``, so
    shieldkit's radius must lie between the reference's radii at ``k - delta``
    and ``k + delta``. An image is borderline, and only its radius interval is
    checked, when ``[k - delta, k + delta]`` straddles the smallest certifying
    count, or when its top two classes are closer than 4.5 standard deviations
    of their difference over the ``n0`` selection draws plus the ``n`` draws
    that estimate it (either run may then choose another class).
    """
    x, _ = images
    predictions, radii, counts = reference_certify(trained, x, sigma=SIGMA, n0=N0, n=N, alpha=ALPHA, seed=12345)
    threshold = next(k for k in range(N + 1) if radius_of_count(k) > 0)  # the fewest votes that certify
    decided = compared = 0
    for i in range(len(x)):
        top2 = counts[i].topk(2).values.tolist()
        k = top2[0]
        p = (k + 1) / (N + 2)
        delta = math.ceil(4.5 * math.sqrt(2 * N * p * (1 - p))) + 1
        low, high = max(0, k - delta), min(N, k + delta)
        sure_abstain = high < threshold
        p1, p2 = top2[0] / N, top2[1] / N
        spread = math.sqrt(max(p1 + p2 - (p1 - p2) ** 2, 1e-12) * (1 / N0 + 1 / N))
        sure_certify = low >= threshold and p1 - p2 >= 4.5 * spread
        if sure_abstain or sure_certify:
            decided += 1
            assert certificate.predictions[i] == predictions[i], (i, counts[i].tolist())
        chosen = int(predictions[i])
        if chosen != ABSTAIN and certificate.predictions[i] == chosen:  # the same class: compare its radius
            k = int(counts[i][chosen])
            p = (k + 1) / (N + 2)
            delta = math.ceil(4.5 * math.sqrt(2 * N * p * (1 - p))) + 1
            got = certificate.radii[i].item()
            expected = (radius_of_count(max(0, k - delta)) - 1e-6, radius_of_count(min(N, k + delta)) + 1e-6)
            assert expected[0] <= got <= expected[1], (i, got, radii[i].item(), k, delta)
            compared += 1
    assert decided >= 85 and compared >= 80, (decided, compared)  # the comparison covers most images


# ------------------------------------------- (e): seeding, counting, chunking


class Counter:
    """A forward hook counting the base model's forward passes and the images they carried."""

    def __init__(self, model: nn.Module):
        self.calls = self.images = 0
        self.handle = model.register_forward_hook(self)

    def __call__(self, module, inputs, output):
        self.calls += 1
        self.images += inputs[0].shape[0]


def noise_seen(defense: RandomizedSmoothing, x: torch.Tensor, draws: int) -> torch.Tensor:
    """The noise the base model received in ``defense.counts`` (its inputs less the images)."""
    seen = []

    class Record(nn.Module):
        def forward(self, noisy):
            seen.append(noisy.clone())
            return torch.zeros(noisy.shape[0], 2)

    defense.counts(Record(), x, draws)
    return torch.cat(seen) - x.repeat_interleave(draws, dim=0)


def test_same_seed_same_certificate_and_counts_match_a_forward_hook(trained, images):
    x = images[0][:10]
    first = RandomizedSmoothing(sigma=SIGMA, seed=7).certify(trained, x, n0=8, n=30, alpha=ALPHA, batch_size=37)
    counter = Counter(trained)
    try:
        defense = RandomizedSmoothing(sigma=SIGMA, seed=7)
        second = defense.certify(trained, x, n0=8, n=30, alpha=ALPHA, batch_size=37)
    finally:
        counter.handle.remove()
    assert torch.equal(first.predictions, second.predictions) and torch.equal(first.radii, second.radii)
    assert second.forwards == counter.calls == math.ceil(80 / 37) + math.ceil(300 / 37)
    assert second.queries == counter.images == 10 * (8 + 30)
    defense.reseed(7)  # the defence's stream restarts: the same certificate again
    third = defense.certify(trained, x, n0=8, n=30, alpha=ALPHA, batch_size=37)
    assert torch.equal(first.radii, third.radii)
    assert not torch.equal(noise_seen(RandomizedSmoothing(sigma=SIGMA, seed=7), x[:2], 4),
                           noise_seen(RandomizedSmoothing(sigma=SIGMA, seed=8), x[:2], 4))  # the seed decides the draws


def test_batch_size_changes_nothing_under_the_same_seed(trained, images):
    x = images[0][:10]
    certificates = [RandomizedSmoothing(sigma=SIGMA, seed=3).certify(trained, x, n0=8, n=30, alpha=ALPHA,
                                                                     batch_size=batch_size)
                    for batch_size in (1, 37, 64, 1000)]
    for other in certificates[1:]:
        assert torch.equal(certificates[0].predictions, other.predictions)
        assert torch.equal(certificates[0].radii, other.radii)


def test_noise_stream_does_not_depend_on_batch_size_for_any_image_size():
    """Images of 3 x 7 x 7 values (not a multiple of 16): one randn per forward batch would change the stream."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 7 * 7, 5))
    x = torch.rand(6, 3, 7, 7)
    votes = []
    for batch_size in (1, 5, 64, 100, 1000):
        defense = RandomizedSmoothing(sigma=0.5, seed=11, batch_size=batch_size)
        votes.append(defense.counts(model, x, 50)[0])
    assert all(torch.equal(votes[0], v) for v in votes[1:])


def test_the_base_model_sees_unclipped_gaussian_noise_of_sigma():
    x = torch.full((3, 1, 8, 8), 0.5)
    noise = noise_seen(RandomizedSmoothing(sigma=0.3, seed=0, batch_size=100), x, 500)
    assert noise.shape == (1500, 1, 8, 8)
    assert abs(noise.mean().item()) < 0.005 and abs(noise.std().item() - 0.3) < 0.005
    assert noise.abs().max().item() > 0.5  # outside [0, 1]: not clipped
    flat = noise.flatten(1)
    assert abs(torch.corrcoef(torch.stack([flat[:-1].flatten(), flat[1:].flatten()]))[0, 1].item()) < 0.02


# ---------------------------------------------------------- (f): bad parameters


@pytest.mark.parametrize(("build", "name"), [
    (lambda: RandomizedSmoothing(sigma=0.0), "sigma"),
    (lambda: RandomizedSmoothing(sigma=-0.25), "sigma"),
    (lambda: RandomizedSmoothing(n0=0), "n0"),
    (lambda: RandomizedSmoothing(n=0), "n"),
    (lambda: RandomizedSmoothing(alpha=0.0), "alpha"),
    (lambda: RandomizedSmoothing(alpha=1.0), "alpha"),
    (lambda: RandomizedSmoothing(alpha=1.5), "alpha"),
    (lambda: RandomizedSmoothing(batch_size=0), "batch_size"),
    (lambda: NoiseTraining(sigma=0.0), "sigma"),
    (lambda: NoiseTraining(sigma=-1.0), "sigma"),
    (lambda: RandomizedSmoothing().certify(nn.Flatten(), torch.rand(1, 1, 4, 4), n0=0), "n0"),
    (lambda: RandomizedSmoothing().certify(nn.Flatten(), torch.rand(1, 1, 4, 4), alpha=1.0), "alpha"),
    (lambda: RandomizedSmoothing().predict(nn.Flatten(), torch.rand(1, 1, 4, 4), alpha=-0.1), "alpha"),
    (lambda: RandomizedSmoothing().disproves(nn.Flatten(), torch.rand(1, 1, 4, 4), torch.tensor([0]), n=0), "n"),
])
def test_bad_parameters_give_one_line_errors_naming_them(build, name):
    with pytest.raises(InvalidParameterError) as info:
        build()
    message = str(info.value)
    assert "\n" not in message and f"{name}=" in message, message


# ------------------------------------------------------------ (g): the command


def test_shieldkit_train_noise_training_writes_a_model(tmp_path, capsys):
    from shieldkit.cli import main

    out = tmp_path / "run"
    code = main(["train", "--defense", "noise_training:sigma=0.25", "--data", "mnist", "--train-samples", "200",
                 "--epochs", "1", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert (out / "model.pt").is_file()
    record = json.loads((out / "train.json").read_text())
    assert record["defense"].startswith("noise_training") and record["params"]["sigma"] == 0.25
    from shieldkit.models.files import load_model_file

    model = load_model_file(out / "model.pt")  # a state dict and the spec that rebuilds it: no pickle
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
