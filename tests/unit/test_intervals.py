"""The evaluation's confidence intervals (shieldkit/evaluation/intervals.py) against SciPy's exact binomial
interval, computed independently here, and its coverage on simulated measurements."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest
from scipy.stats import binomtest

from shieldkit.evaluation.intervals import binomial_cdf, clopper_pearson


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
