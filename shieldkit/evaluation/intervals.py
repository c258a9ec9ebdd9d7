"""Confidence intervals for the evaluation's accuracies.

A robust accuracy measured on ``n`` samples is a share of 0/1 outcomes: its 95%
interval is Clopper and Pearson's exact binomial interval (:func:`clopper_pearson`),
never narrower than the truth on any ``n`` (it covers at least 95% for every true
accuracy). On 200 samples a measured 50% spans about 43-57%.

A randomised model's expected accuracy is a mean of per-sample probabilities in ``[0, 1]``
(:mod:`~shieldkit.evaluation.judging`). Such a variable is less spread than a 0/1 outcome of the same
mean (its variance is at most ``p (1 - p)``), so the binomial interval at the summed probabilities, its
ends rounded outward to whole counts, bounds it conservatively (:func:`expected_accuracy_interval`);
tests/unit/test_intervals.py checks its coverage on a simulated randomised model whose true accuracy is
known.

Computed from the binomial distribution itself (NumPy, log-factorials), so the
evaluation needs no SciPy; tests/unit/test_intervals.py checks it against
``scipy.stats.binomtest(...).proportion_ci(method="exact")``.

Reference:
    Clopper, Pearson. The use of confidence or fiducial limits illustrated in the case of the binomial.
    Biometrika 26 (1934).
"""

from __future__ import annotations

import math

import numpy as np

from shieldkit.core.validation import check_int, check_number

#: the confidence of every interval the evaluation reports
CONFIDENCE = 0.95
#: the methods, as the summary names them
EXACT = "Clopper-Pearson (exact binomial)"
EXACT_EXPECTED = "Clopper-Pearson at the summed per-sample probabilities, rounded outward (conservative)"

_BISECTION_STEPS = 60  # halves [0, 1] to about 1e-18: below float64's resolution of a share


def clopper_pearson(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The exact (Clopper-Pearson) ``confidence`` interval ``(low, high)`` of a share of ``successes`` in ``n``.

    ``low`` is the share ``p`` at which ``P(X >= successes) = alpha / 2`` (0 when ``successes`` is 0), ``high``
    the one at which ``P(X <= successes) = alpha / 2`` (1 when ``successes`` is ``n``), ``X ~ Binomial(n, p)``.
    """
    check_int("clopper_pearson", "n", n, minimum=1)
    check_int("clopper_pearson", "successes", successes, minimum=0)
    if successes > n:
        raise ValueError(f"clopper_pearson: successes={successes} is larger than n={n}")
    check_number("clopper_pearson", "confidence", confidence, 0.0, 1.0, strict=True)
    tail = (1.0 - confidence) / 2
    low = 0.0 if successes == 0 else _solve(lambda p: 1.0 - binomial_cdf(successes - 1, n, p) - tail, increasing=True)
    high = 1.0 if successes == n else _solve(lambda p: binomial_cdf(successes, n, p) - tail, increasing=False)
    return low, high


def expected_accuracy_interval(total: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The ``confidence`` interval of a mean of ``n`` per-sample probabilities summing to ``total``: the exact
    binomial interval's low end at ``floor(total)`` successes and its high end at ``ceil(total)``."""
    check_int("expected_accuracy_interval", "n", n, minimum=1)
    check_number("expected_accuracy_interval", "total", total, 0.0, float(n))
    low, _ = clopper_pearson(math.floor(total + 1e-9), n, confidence)
    _, high = clopper_pearson(min(n, math.ceil(total - 1e-9)), n, confidence)
    return low, high


def disjoint(first: tuple[float, float], second: tuple[float, float]) -> bool:
    """Whether two intervals do not overlap: a difference beyond the intervals."""
    return first[1] < second[0] or second[1] < first[0]


def binomial_cdf(k: int, n: int, p: float) -> float:
    """``P(X <= k)`` for ``X ~ Binomial(n, p)``, ``0 < p < 1``, summed from log-factorials."""
    counts = np.arange(k + 1)
    log_factorials = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1)))])
    log_pmf = (log_factorials[n] - log_factorials[counts] - log_factorials[n - counts]
               + counts * np.log(p) + (n - counts) * np.log1p(-p))
    return float(np.exp(log_pmf).sum())


def _solve(function, increasing: bool) -> float:
    """The root in (0, 1) of a monotone ``function``, by bisection."""
    low, high = 0.0, 1.0
    for _ in range(_BISECTION_STEPS):
        middle = (low + high) / 2
        if (function(middle) < 0) == increasing:
            low = middle
        else:
            high = middle
    return (low + high) / 2
