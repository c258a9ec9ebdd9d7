"""The evaluation's confidence intervals (shieldkit/evaluation/intervals.py) against SciPy's exact binomial
interval, computed independently here, and its coverage on simulated measurements."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest
from scipy.stats import binomtest

from shieldkit.evaluation.intervals import (
    binomial_cdf,
    clopper_pearson,
    disjoint,
    expected_accuracy_interval,
)


@pytest.mark.parametrize("successes, n", [(0, 1), (1, 1), (0, 10), (3, 10), (10, 10), (50, 100), (1, 100),
                                          (99, 100), (100, 200), (0, 500), (437, 500), (9999, 10000)])
@pytest.mark.parametrize("confidence", [0.95, 0.99])
def test_clopper_pearson_equals_scipys_exact_interval(successes, n, confidence):
    reference = binomtest(successes, n).proportion_ci(confidence_level=confidence, method="exact")
    low, high = clopper_pearson(successes, n, confidence)
    assert low == pytest.approx(reference.low, abs=1e-9) and high == pytest.approx(reference.high, abs=1e-9)


def test_two_hundred_samples_at_one_half_span_about_seven_points_each_way():
    low, high = clopper_pearson(100, 200)
    assert 0.42 < low < 0.43 and 0.57 < high < 0.58


def test_binomial_cdf_sums_the_probabilities():
    n, p = 20, 0.3
    pmf = [comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(n + 1)]
    for k in (0, 5, 19, 20):
        assert binomial_cdf(k, n, p) == pytest.approx(sum(pmf[: k + 1]), rel=1e-12)


def test_the_interval_covers_the_true_accuracy_at_least_as_often_as_stated():
    rng = np.random.default_rng(0)
    for true, n in ((0.5, 50), (0.9, 100), (0.02, 200)):
        draws = rng.binomial(n, true, size=400)
        covered = np.mean([low <= true <= high for low, high in (clopper_pearson(int(k), n) for k in draws)])
        # exact intervals are conservative: 95% at least, less 3 binomial SE of the 400 simulated measurements
        assert covered >= 0.95 - 3 * (0.95 * 0.05 / 400) ** 0.5, (true, n, covered)


@pytest.mark.parametrize("bad", [dict(successes=-1, n=5), dict(successes=6, n=5), dict(successes=1, n=0),
                                 dict(successes=1, n=5, confidence=1.0)])
def test_bad_arguments_are_refused(bad):
    with pytest.raises(ValueError):
        clopper_pearson(**bad)


# ------------------------------------------------------- the expected accuracy of a randomised model


def test_the_expected_accuracy_interval_rounds_the_exact_interval_outward():
    assert expected_accuracy_interval(50.0, 100) == pytest.approx(clopper_pearson(50, 100))
    low, high = expected_accuracy_interval(50.4, 100)
    assert low == pytest.approx(clopper_pearson(50, 100)[0]) and high == pytest.approx(clopper_pearson(51, 100)[1])
    assert expected_accuracy_interval(0.0, 10)[0] == 0.0 and expected_accuracy_interval(10.0, 10)[1] == 1.0


@pytest.mark.parametrize("shape", ["hesitant", "confident", "mixed"])
def test_the_expected_accuracy_interval_covers_a_simulated_randomised_models_true_accuracy(shape):
    """A randomised model whose probability of a correct answer on each image of the population is known: each
    measurement draws 100 images and judges each on 16 forwards; the interval must cover the population's mean
    probability (the true expected accuracy) at least 95% of the time, less 3 SE of the 400 simulations."""
    rng = np.random.default_rng(1)
    population = {"hesitant": rng.beta(5, 5, 10000), "confident": rng.beta(20, 1, 10000),
                  "mixed": np.concatenate([np.zeros(3000), np.ones(4000), rng.uniform(0, 1, 3000)])}[shape]
    true = population.mean()
    covered = []
    for _ in range(400):
        p = rng.choice(population, 100)
        shares = rng.binomial(16, p) / 16
        low, high = expected_accuracy_interval(float(shares.sum()), 100)
        covered.append(low <= true <= high)
    assert np.mean(covered) >= 0.95 - 3 * (0.95 * 0.05 / 400) ** 0.5, (shape, np.mean(covered))


def test_disjoint_intervals_are_a_difference_beyond_them():
    assert disjoint((0.1, 0.2), (0.25, 0.4)) and not disjoint((0.1, 0.3), (0.25, 0.4))
