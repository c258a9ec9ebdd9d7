"""Each gradient-masking check on synthetic rows: the reduce stage (``summarize(rows, manifest)``) flags what the
rows show and passes what they do not, with no model, no data and no attack run.

Ten samples, one chunk, labels 0..9; the undefended model classifies all ten correctly unless a test says
otherwise. A helper builds the rows of one defence; each test changes the one thing its check reads.
"""

from __future__ import annotations

import pytest

from shieldkit.evaluation import masking
from shieldkit.evaluation.manifest import CertifierManifest, DefenseManifest, Manifest
from shieldkit.evaluation.records import (
    AttackRow,
    CertificateRow,
    CleanRow,
    EffortRow,
    GradientRow,
    LargeEpsRow,
    RandomnessRow,
)
from shieldkit.evaluation.summaries import SuiteAttack
from shieldkit.evaluation.summary import summarize

N = 10
ATTACKS = [SuiteAttack("pgd", "pgd.native", "gradient"), SuiteAttack("square", "square.native", "score")]


def _manifest(eps=(0.1, 0.3), *, certifier=None, eot=1, same_as_naive=True) -> Manifest:
    defense = DefenseManifest(label="none", name="none", kind="none", view="same as deployed",
                              adaptive_stage=not same_as_naive, randomized=eot > 1, eot=eot,
                              same_as_naive=same_as_naive, certifier=certifier)
    return Manifest(config_hash="synthetic", data="synthetic", n=N, image_size=4, labels=list(range(N)), norm="l2",
                    eps=list(eps), bounds=(0.0, 1.0), cascade=True, seed=0, checks=True, examples=0,
                    attacks=ATTACKS, defenses=[defense])


def _attack(eps, stage, attack, fooled, *, attacked=None, error=None, access=None) -> AttackRow:
    access = access or ("score" if attack == "square" else "gradient")
    return AttackRow(key=f"attack|none|{eps!r}|{stage}|{attack}|0", defense="none", eps=eps, stage=stage,
                     attack=attack, name=f"{attack}.native", access=access, chunk=(0, N), seed=0,
                     attacked=list(range(N)) if attacked is None else attacked, fooled=list(fooled),
                     misclassified=list(fooled), error=error)


def _healthy_rows(fooled_at=None) -> list:
    """Rows of a model without masking: PGD fools 3 samples at eps 0.1 and 8 at 0.3, Square nothing more;
    gradients flow, the large-eps attack leaves nothing, two forwards agree, more effort finds nothing."""
    fooled_at = fooled_at or {0.1: [0, 1, 2], 0.3: [0, 1, 2, 3, 4, 5, 6, 7]}
    rows = [CleanRow(key="clean|none|0", defense="none", chunk=(0, N), pred=list(range(N)), correct=list(range(N)),
                     detected=[])]
    for eps, fooled in fooled_at.items():
        rows.append(_attack(eps, "naive", "pgd", fooled))
        left = [i for i in range(N) if i not in fooled]
        rows.append(_attack(eps, "blackbox", "square", [], attacked=left))
    rows += [RandomnessRow(key="check|none|randomness", defense="none", changed_predictions=0.0,
                           max_logit_difference=0.0),
             GradientRow(key="check|none|gradients|naive", defense="none", mode="naive", zero_ce=0.0,
                         zero_margin=0.0),
             LargeEpsRow(key="check|none|large_eps|naive", defense="none", mode="naive", attack="pgd", eps=2.0,
                         samples=N, accuracy=0.0)]
    for eps, fooled in fooled_at.items():
        robust = [i for i in range(N) if i not in fooled]
        rows.append(EffortRow(key=f"check|none|more_effort|naive|{eps!r}", defense="none", mode="naive", eps=eps,
                              attack="pgd", target="deployed", steps=20, restarts=2, attacked=robust, fooled=[],
                              robust=len(robust) / N))
    return rows


def _outcome(rows, manifest=None, check="", mode="naive"):
    record = summarize(rows, manifest or _manifest()).defense("none")
    (outcome,) = [c for c in record.checks if c.check == check and c.mode == mode]
    return outcome


def _replace(rows, kind, **changes):
    import dataclasses

    return [dataclasses.replace(row, **changes) if isinstance(row, kind) else row for row in rows]


def test_every_check_passes_on_the_rows_of_a_healthy_model():
    record = summarize(_healthy_rows(), _manifest()).defense("none")
    assert [c.check for c in record.checks if c.mode == "naive"] == [
        "monotone", "large_eps", "black_box", "randomness", "zero_gradients", "errors", "more_effort", "certificate"]
    assert not record.flags("naive") and not record.flags("adaptive")
    assert record.eps["0.1"].naive == pytest.approx(0.7) and record.eps["0.3"].naive == pytest.approx(0.2)


def test_monotone_flags_accuracy_that_rises_with_eps():
    assert _outcome(_healthy_rows(), check="monotone").passed is True
    rising = _healthy_rows({0.1: [0, 1, 2, 3, 4, 5, 6, 7], 0.3: [0, 1, 2]})
    outcome = _outcome(rising, check="monotone")
    assert outcome.passed is False and outcome.value == pytest.approx(0.5) and "rises with eps" in outcome.reason


def test_large_eps_flags_accuracy_left_at_a_budget_covering_the_whole_range():
    masked = _replace(_healthy_rows(), LargeEpsRow, accuracy=0.6)
    outcome = _outcome(masked, check="large_eps")
    assert outcome.passed is False and "60% accuracy" in outcome.reason
    # 6 of 10 samples: the exact interval is 26-88%, above the 10% threshold
    assert "95% interval 26-88% on 10 samples: beyond the 10% threshold" in outcome.reason
    near = _outcome(_replace(_healthy_rows(), LargeEpsRow, accuracy=0.2), check="large_eps")
    assert near.passed is False and "not beyond (it may be sampling noise) the 10% threshold" in near.reason
    edge = _replace(_healthy_rows(), LargeEpsRow, accuracy=masking.LARGE_EPS_MAX_ACCURACY)
    assert _outcome(edge, check="large_eps").passed is True
    crashed = _replace(_healthy_rows(), LargeEpsRow, accuracy=None, error="RuntimeError: boom")
    assert _outcome(crashed, check="large_eps").passed is False


def test_black_box_flags_samples_only_the_score_based_attack_fooled():
    rows = _healthy_rows()
    rows = [_attack(0.3, "blackbox", "square", [8, 9], attacked=[8, 9]) if isinstance(r, AttackRow) and
            r.stage == "blackbox" and r.eps == 0.3 else r for r in rows]
    outcome = _outcome(rows, check="black_box")
    assert outcome.passed is False and "fooled 2 samples" in outcome.reason and outcome.value == pytest.approx(0.2)
    assert "95% interval 3-56% on 10 samples: beyond the 2% threshold" in outcome.reason  # 2 of 10: 2.5-55.6%
    one = [_attack(0.3, "blackbox", "square", [8], attacked=[8, 9]) if isinstance(r, AttackRow) and
           r.stage == "blackbox" and r.eps == 0.3 else r for r in _healthy_rows()]
    assert _outcome(one, check="black_box").passed is True  # one sample is below BLACK_BOX_MIN_SAMPLES


def test_randomness_flags_changing_predictions_unless_the_adaptive_mode_averages_draws():
    random = _replace(_healthy_rows(), RandomnessRow, changed_predictions=0.3, max_logit_difference=2.0)
    assert _outcome(random, check="randomness").passed is False
    manifest = _manifest(eot=8, same_as_naive=False)
    assert _outcome(random, manifest, check="randomness", mode="adaptive").passed is True
    assert _outcome(random, _manifest(), check="randomness", mode="adaptive").passed is False  # no EOT


def test_zero_gradients_flags_a_share_of_all_zero_gradients_above_the_threshold():
    flat = _replace(_healthy_rows(), GradientRow, zero_ce=1.0, zero_margin=0.5)
    outcome = _outcome(flat, check="zero_gradients")
    assert outcome.passed is False and outcome.value == pytest.approx(0.5)
    saturated = _replace(_healthy_rows(), GradientRow, zero_ce=1.0, zero_margin=0.0)
    assert _outcome(saturated, check="zero_gradients").passed is True  # CE saturates; the margin does not
    cut = _replace(_healthy_rows(), GradientRow, error="RuntimeError: does not require grad")
    assert _outcome(cut, check="zero_gradients").passed is False


def test_errors_flags_a_crashed_attack_in_both_modes_when_it_is_black_box():
    rows = [_attack(r.eps, r.stage, r.attack, [], attacked=r.attacked, error="RuntimeError: boom")
            if isinstance(r, AttackRow) and r.stage == "blackbox" and r.eps == 0.1 else r for r in _healthy_rows()]
    for mode in ("naive", "adaptive"):
        outcome = _outcome(rows, check="errors", mode=mode)
        assert outcome.passed is False and "square (blackbox, eps=0.1): RuntimeError: boom" in outcome.reason


def test_more_effort_flags_a_suite_that_more_steps_still_improve():
    rows = _healthy_rows()
    unconverged = _replace(rows, EffortRow, fooled=[8, 9])
    outcome = _outcome(unconverged, check="more_effort")
    # eps 0.3: two of the two robust samples (robust accuracy 0.2) fall: about -20 points
    assert outcome.passed is False and outcome.value == pytest.approx(0.2) and "has not converged" in outcome.reason
    one = [r if not isinstance(r, EffortRow) else
           EffortRow(**{**r.__dict__, "fooled": r.attacked[:1]}) for r in rows]
    assert _outcome(one, check="more_effort").passed is True  # one sample is below MORE_EFFORT_MIN_SAMPLES


def test_certificate_flags_a_broken_certificate_and_a_lower_bound_above_the_upper_bound():
    certifier = CertifierManifest("l2", {"sigma": 0.25})
    certificate = CertificateRow(key="certificate|none|0", defense="none", chunk=(0, N), predictions=list(range(N)),
                                 radii=[0.05] * 3 + [0.5] * 7, forwards=0, queries=0, seconds=0.0)
    rows = [*_healthy_rows(), certificate]
    # eps 0.1: 7 certified beyond it, attacks leave 7 robust; eps 0.3: 7 certified, attacks leave only 2
    outcome = _outcome(rows, _manifest(certifier=certifier), check="certificate")
    assert outcome.passed is False and "lower bound above an upper bound" in outcome.reason
    consistent = [*_healthy_rows({0.1: [0, 1, 2], 0.3: [0, 1, 2]}), certificate]
    assert _outcome(consistent, _manifest(certifier=certifier), check="certificate").passed is True
    disproved = [_replace([r], AttackRow, disproved=[5])[0] if isinstance(r, AttackRow) and r.eps == 0.1
                 and r.stage == "naive" else r for r in consistent]
    outcome = _outcome(disproved, _manifest(certifier=certifier), check="certificate")
    assert outcome.passed is False and "inside their certified l2 radius" in outcome.reason
    assert _outcome(_healthy_rows(), check="certificate").passed is None  # not a certified defence
