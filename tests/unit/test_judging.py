"""A randomised model's judgement (shieldkit/evaluation/judging.py, summary.DrawnPoints): the number of draws,
and the expected accuracy's reduction, computed here by hand."""

from __future__ import annotations

import pytest

from shieldkit.evaluation.judging import MAX_HALF, MIN_HALF, draws_for_variance
from shieldkit.evaluation.records import AttackRow, CleanRow
from shieldkit.evaluation.summary import DrawnPoints


@pytest.mark.parametrize("variance, draws", [(0.0, 2 * MIN_HALF), (0.04, 2 * MIN_HALF), (0.16, 32),
                                             (0.25, 50), (10.0, 2 * MAX_HALF)])
def test_judging_draws_follow_the_prediction_variance(variance, draws):
    assert draws_for_variance(variance) == draws


def _clean(selected, judged, draws=8):
    return CleanRow(key="clean|none|0", defense="none", chunk=(0, len(selected)), pred=[0] * len(selected),
                    correct=[i for i, (s, j) in enumerate(zip(selected, judged)) if s + j], detected=[],
                    draws=draws, selected=selected, judged=judged)


def _attack(attacked, selected, judged, stage="naive", draws=8):
    return AttackRow(key="k", defense="none", eps=0.1, stage=stage, attack="a", name="a", access="gradient",
                     chunk=(0, 4), seed=0, attacked=attacked, draws=draws, selected=selected, judged=judged)


def test_each_samples_worst_point_is_picked_on_the_first_half_and_measured_on_the_second():
    # 4 samples, 4 draws a half: clean shares (selected, judged) 4/4,4/4 | 4/4,2/4 | 1/4,3/4 | 0,0
    points = DrawnPoints.of([_clean([4, 4, 1, 0], [4, 2, 3, 0])])
    assert points.clean(4) == pytest.approx(((8 + 6 + 4 + 0) / 8 / 4, 2 / 4))  # majority: 8/8, 6/8 (not 4/8)
    rows = [
        _attack([0, 1, 2], [2, 4, 0], [4, 0, 1]),            # sample 0: 2/4 picked -> 4/4; sample 2: 0/4 -> 1/4
        _attack([0, 1], [1, 3], [3, 3], stage="adaptive"),  # sample 0: 1/4 is worse -> 3/4; sample 1: 3/4 -> 3/4
    ]
    # naive: sample 0 -> 1.0 (its point 2/4 beat the clean 4/4), sample 1 -> clean's 2/4 (its attack's 4/4 did not
    # beat the clean 4/4: ties keep the earlier point), sample 2 -> 1/4, sample 3 -> 0
    expected, majority = points.robust(4, rows[:1])
    assert expected == pytest.approx((1.0 + 0.5 + 0.25 + 0) / 4)
    assert majority == pytest.approx(1 / 4)  # sample 0 (6/8 at its point); sample 1's attack point is 4/8: no
    expected, majority = points.robust(4, rows)
    assert expected == pytest.approx((0.75 + 0.75 + 0.25 + 0) / 4)
    assert majority == pytest.approx(0 / 4)  # sample 0 is 4/8 at the adaptive point


def test_a_crashed_unit_leaves_its_samples_at_their_other_points():
    points = DrawnPoints.of([_clean([4, 4], [4, 4])])
    crashed = AttackRow(key="k", defense="none", eps=0.1, stage="naive", attack="a", name="a", access="gradient",
                        chunk=(0, 2), seed=0, attacked=[0, 1], error="boom")
    assert points.robust(2, [crashed]) == (1.0, 1.0)


def test_a_model_judged_on_one_draw_has_no_drawn_points():
    row = CleanRow(key="clean|none|0", defense="none", chunk=(0, 2), pred=[1, 2], correct=[0], detected=[])
    assert DrawnPoints.of([row]) is None
