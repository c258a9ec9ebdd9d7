"""The gradient-masking checklist: measurements on the models, then flags with reasons.

A robustness number computed with attacks whose gradients are masked is
meaningless. Following Carlini et al. (2019, section 5) and AutoAttack's sanity
checks, every (defence, naive|adaptive) evaluation is checked for:

1. ``monotone``: robust accuracy must not rise with epsilon.
2. ``large_eps``: the strongest white-box attack at an epsilon covering the whole
   pixel range must bring accuracy to about zero.
3. ``black_box``: black-box and noise attacks must not fool samples the
   white-box attacks could not.
4. ``randomness``: predictions that change between repeated forwards need EOT.
5. ``zero_gradients``: input gradients that are exactly zero (or do not flow at
   all) mean gradient attacks are blind.
6. ``errors``: an attack that crashed leaves its samples counted as robust.
7. ``more_effort``: the suite's strongest iterative attack with twice the steps and
   one more restart, on a sample of the still-robust points, must not lower robust
   accuracy by more than a point (extrapolated from the sample).
8. ``certificate``: for a certified defence, no attack may break a sample inside its
   certified radius, and the certified accuracy (a lower bound) may not exceed the
   attacks' robust accuracy (an upper bound).

A failed check becomes a flag printed next to the number it casts doubt on.

Reference:
    Carlini et al. On Evaluating Adversarial Robustness. arXiv:1902.06705, 2019.
    Croce, Hein. Reliable evaluation of adversarial robustness with an ensemble of
    diverse parameter-free attacks (AutoAttack). ICML 2020.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from shieldkit.core import losses
from shieldkit.core.threat import format_eps
from shieldkit.diagnosis.gradients import ZERO_GRADIENT_MAX_SHARE
from shieldkit.evaluation.intervals import expected_accuracy_interval
from shieldkit.evaluation.records import (
    EffortRow,
    GradientRow,
    LargeEpsRow,
    RandomnessRow,
    eps_label,
)
from shieldkit.evaluation.summaries import CheckOutcome, DefenseSummary

#: Thresholds of the checks (documented in docs/evaluate.md). The zero-gradient share is the diagnosis's
#: (:data:`shieldkit.diagnosis.gradients.ZERO_GRADIENT_MAX_SHARE`): one threshold for one idea.
LARGE_EPS_MAX_ACCURACY = 0.10
BLACK_BOX_MAX_SHARE = 0.02
BLACK_BOX_MIN_SAMPLES = 2
MONOTONE_TOLERANCE = 0.01
#: certified accuracy (a lower bound) may exceed an attack's (an upper bound) by Monte-Carlo error only
CERTIFIED_TOLERANCE = 0.02
CHECK_SAMPLES = 32
#: more steps and restarts may lower robust accuracy by this much (Carlini et al.: "converged")
MORE_EFFORT_MAX_DROP = 0.01
#: ... and must break at least this many sampled points to count (one sample in 32 is sampling noise)
MORE_EFFORT_MIN_SAMPLES = 2


def one_line(error: BaseException) -> str:
    """An exception as the one line a row or a flag records."""
    text = f"{type(error).__name__}: {error}".splitlines()[0]
    return text[:200]


# ---------------------------------------------------------------- measurements


@torch.no_grad()
def measure_randomness(forward, x: Tensor, seeds: tuple[int, int], key: str, defense: str) -> RandomnessRow:
    """Forward ``x`` twice under different seeds; how often do predictions and logits change?

    Args:
        forward: ``(images, seed) -> logits`` (the runner reseeds the defence inside).
        x: clean images.
        seeds: the two seeds.
        key, defense: the row's identity.
    """
    first, second = forward(x, seeds[0]), forward(x, seeds[1])
    changed = (first.argmax(1) != second.argmax(1)).float().mean().item()
    return RandomnessRow(key, defense, changed, (first - second).abs().max().item())


def measure_gradients(model: nn.Module, x: Tensor, y: Tensor, key: str, defense: str, mode: str) -> GradientRow:
    """Share of samples whose input gradient is exactly zero, for the cross-entropy and the margin loss.

    The margin loss (best other logit minus true logit) does not saturate, so a
    zero margin gradient means the model is flat (or cut) around the input, not
    merely confident.
    """
    try:
        x = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            logits = model(x)
            ce = torch.nn.functional.cross_entropy(logits, y, reduction="sum")
            (grad_ce,) = torch.autograd.grad(ce, x, retain_graph=True)
            (grad_margin,) = torch.autograd.grad(losses.margin(logits, y).sum(), x)
    except RuntimeError as error:
        return GradientRow(key, defense, mode, 1.0, 1.0, one_line(error))
    zero = lambda g: (g.reshape(len(g), -1).abs().amax(1) == 0).float().mean().item()  # noqa: E731
    return GradientRow(key, defense, mode, zero(grad_ce), zero(grad_margin))


# ---------------------------------------------------------------------- flags


@dataclass
class Measurements:
    """The measurement rows of one defence in one mode (``None``: not measured)."""

    randomness: RandomnessRow | None = None
    gradients: GradientRow | None = None
    large_eps: LargeEpsRow | None = None
    effort: list[EffortRow] = field(default_factory=list)


def check_flags(defense: DefenseSummary, mode: str, measured: Measurements) -> list[CheckOutcome]:
    """All checks for one defence's naive or adaptive evaluation.

    Args:
        defense: the defence's summary (accuracies per eps, black-box extras, errors).
        mode: ``"naive"`` or ``"adaptive"``.
        measured: the measurement rows of this defence for ``mode``.

    Returns:
        One outcome per check, in :data:`CHECKS` order.
    """
    outcomes = [check(defense, mode, measured) for check in CHECKS]
    for outcome in outcomes:
        outcome.mode = mode
    return outcomes


def _monotone(defense: DefenseSummary, mode: str, measured: Measurements) -> CheckOutcome:
    series = sorted((float(eps), record.accuracy(mode), eps) for eps, record in defense.eps.items())
    tolerance = max(MONOTONE_TOLERANCE, 1.5 / max(1, defense.n))
    for (_, low, key_low), (_, high, key_high) in zip(series, series[1:]):
        if high > low + tolerance:
            return CheckOutcome("monotone", False, high - low,
                                f"accuracy rises with eps ({100 * low:.1f}% at {eps_label(key_low)} -> "
                                f"{100 * high:.1f}% at {eps_label(key_high)}): the attacks are not finding what "
                                "exists")
    return CheckOutcome("monotone", True, None, "accuracy does not rise with eps")


def _large_eps(defense: DefenseSummary, mode: str, measured: Measurements) -> CheckOutcome:
    row = measured.large_eps
    if row is None:
        return CheckOutcome("large_eps", None, None, "not run (no white-box attack in the suite)")
    if row.error:
        return CheckOutcome("large_eps", False, None, f"{row.attack} at eps={format_eps(row.eps)} crashed: {row.error}")
    accuracy = row.accuracy
    if accuracy > LARGE_EPS_MAX_ACCURACY:
        return CheckOutcome("large_eps", False, accuracy,
                            f"{row.attack} at eps={format_eps(row.eps)} (the whole pixel range) leaves {100 * accuracy:.0f}% "
                            "accuracy instead of ~0%: its gradients are masked"
                            + _against_threshold(accuracy * row.samples, row.samples, LARGE_EPS_MAX_ACCURACY))
    return CheckOutcome("large_eps", True, accuracy, f"{row.attack} at eps={format_eps(row.eps)} leaves {100 * accuracy:.0f}%")


def _black_box(defense: DefenseSummary, mode: str, measured: Measurements) -> CheckOutcome:
    worst = None
    for eps, record in defense.eps.items():
        extra = getattr(record.black_box_extra, mode)
        base = max(1, record.clean_correct)
        if extra >= BLACK_BOX_MIN_SAMPLES and extra / base > BLACK_BOX_MAX_SHARE:
            if worst is None or extra / base > worst[1]:
                worst = (eps, extra / base, extra)
    if worst is None:
        return CheckOutcome("black_box", True, None, "black-box attacks found nothing the white-box ones missed")
    eps, share, extra = worst
    base = max(1, defense.eps[eps].clean_correct)
    return CheckOutcome("black_box", False, share,
                        f"black-box/noise attacks fooled {extra} samples ({100 * share:.0f}%) at eps={eps_label(eps)} "
                        "that every white-box attack missed: gradients are misleading"
                        + _against_threshold(extra, base, BLACK_BOX_MAX_SHARE))


def _against_threshold(count: float, n: int, threshold: float) -> str:
    """Whether a measured share ``count / n`` is above a check's threshold beyond its 95% interval."""
    low, high = expected_accuracy_interval(min(float(n), max(0.0, count)), n)
    verdict = "beyond" if low > threshold else "not beyond (it may be sampling noise)"
    return (f" (95% interval {100 * low:.0f}-{100 * high:.0f}% on {n} samples: {verdict} the "
            f"{100 * threshold:.0f}% threshold)")


def _randomness(defense: DefenseSummary, mode: str, measured: Measurements) -> CheckOutcome:
    row = measured.randomness
    if row is None:
        return CheckOutcome("randomness", None, None, "not measured")
    changed = row.changed_predictions
    if changed <= 0 and row.max_logit_difference < 1e-5:
        return CheckOutcome("randomness", True, 0.0, "repeated forwards agree")
    if changed <= 0:  # the logits move but no decision does: no flag can say robustness is overestimated here
        return CheckOutcome("randomness", True, 0.0,
                            f"repeated forwards change no prediction (logits by up to {row.max_logit_difference:.2g})")
    if mode == "adaptive" and defense.eot > 1:
        return CheckOutcome("randomness", True, changed,
                            f"randomised ({100 * changed:.0f}% of predictions change); EOT over {defense.eot} draws used")
    return CheckOutcome("randomness", False, changed,
                        f"repeated forwards change {100 * changed:.0f}% of predictions (logits by up to "
                        f"{row.max_logit_difference:.2g}): attacks without EOT overestimate robustness")


def _zero_gradients(defense: DefenseSummary, mode: str, measured: Measurements) -> CheckOutcome:
    row = measured.gradients
    if row is None:
        return CheckOutcome("zero_gradients", None, None, "not measured")
    if row.error:
        return CheckOutcome("zero_gradients", False, 1.0, f"gradients do not flow through the attacked model ({row.error})")
    share = row.zero_margin
    if share > ZERO_GRADIENT_MAX_SHARE:
        return CheckOutcome("zero_gradients", False, share,
                            f"{100 * share:.0f}% of samples have an all-zero input gradient: gradient attacks are blind")
    return CheckOutcome("zero_gradients", True, share,
                        f"{100 * share:.0f}% zero margin gradients ({100 * row.zero_ce:.0f}% for cross-entropy)")


def _errors(defense: DefenseSummary, mode: str, measured: Measurements) -> CheckOutcome:
    errors = defense.errors.get(mode, [])
    if errors:
        return CheckOutcome("errors", False, len(errors),
                            f"{len(errors)} attack run(s) crashed and counted their samples as robust, e.g. {errors[0]}")
    return CheckOutcome("errors", True, 0, "no attack crashed")


def _more_effort(defense: DefenseSummary, mode: str, measured: Measurements) -> CheckOutcome:
    rows = [row for row in measured.effort if row.attacked]
    if not rows:
        return CheckOutcome("more_effort", None, None, "not run (no iterative white-box attack, or nothing robust)")
    errors = [row for row in rows if row.error]
    if errors:
        row = errors[0]
        return CheckOutcome("more_effort", None, None, f"{row.attack} with {row.steps} steps crashed: {row.error}")
    drops = [(len(row.fooled) / len(row.attacked) * row.robust, row) for row in rows]
    drop, worst = max(drops, key=lambda pair: pair[0])
    if drop > MORE_EFFORT_MAX_DROP and len(worst.fooled) >= MORE_EFFORT_MIN_SAMPLES:
        return CheckOutcome("more_effort", False, drop,
                            f"{worst.attack} with {worst.steps} steps and {worst.restarts} restarts broke "
                            f"{len(worst.fooled)} of {len(worst.attacked)} still-robust samples at eps={format_eps(worst.eps)} "
                            f"(about -{100 * drop:.1f} points): the suite has not converged; run --suite thorough")
    return CheckOutcome("more_effort", True, drop,
                        f"twice the steps and one more restart broke {sum(len(r.fooled) for r in rows)} of "
                        f"{sum(len(r.attacked) for r in rows)} still-robust samples (at most -{100 * drop:.1f} points)")


def _certificate(defense: DefenseSummary, mode: str, measured: Measurements) -> CheckOutcome:
    certified = defense.certified
    if certified is None:
        return CheckOutcome("certificate", None, None, "no certificate (not a certified defence)")
    for eps, point in certified.at_eps.items():
        broken = point.disproved.get(mode, [])
        if broken:
            return CheckOutcome("certificate", False, len(broken),
                                f"attacks at eps={eps_label(eps)} broke {len(broken)} samples inside their certified "
                                f"{certified.norm} radius (e.g. sample {broken[0]}; the defence confidently gives "
                                "another class there): the certificate or the attack's budget is wrong")
    tolerance = max(CERTIFIED_TOLERANCE, 3 / max(1, defense.n))
    for eps, point in certified.at_eps.items():
        empirical = point.adaptive if mode == "adaptive" else point.naive
        if point.certified is not None and point.certified > empirical + tolerance:
            return CheckOutcome("certificate", False, point.certified - empirical,
                                f"certified accuracy {100 * point.certified:.1f}% (radius {point.radius:.3g}) is above "
                                f"the attacks' robust accuracy {100 * empirical:.1f}% at eps={eps_label(eps)}: a lower bound "
                                "above an upper bound, so one of them is wrong")
    return CheckOutcome("certificate", True, None,
                        "no attack broke a certificate; certified accuracy is at most the attacks' at every eps")


#: The checklist, in report order. A new check is one function ``(defense, mode, measured) -> CheckOutcome``
#: added here (and, if it needs a measurement on the models, a row type in records.py the runner writes).
CHECKS = (_monotone, _large_eps, _black_box, _randomness, _zero_gradients, _errors, _more_effort, _certificate)
