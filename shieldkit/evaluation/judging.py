"""How many forwards judge a randomised model: set from the measured variance of its prediction.

A randomised model's answer on an image is a coin with some probability of being right; the
evaluation reports the mean of that probability (the expected accuracy), so every point it judges
(each clean image, each attack's adversarial image) is judged on ``draws`` fresh forwards
(:meth:`~shieldkit.evaluation.adaptive.DefensePlan.judge`). Half of them pick each sample's worst
point, the other half measure it (see :class:`~shieldkit.evaluation.adaptive.Judgement`).

:func:`judging_draws` probes the deployed model with :data:`PROBE_DRAWS` forwards of the first clean
images and takes the largest per-sample variance ``v = p (1 - p)`` of a correct answer. Each half then
gets ``ceil(v / TARGET_STANDARD_ERROR**2)`` draws, between :data:`MIN_HALF` and :data:`MAX_HALF`: so the
probability measured at a sample's worst point has a standard error of about
:data:`TARGET_STANDARD_ERROR` where the model hesitates most. Adversarial images sit near the decision
boundary, where the model hesitates more than on clean images, hence the floor.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from shieldkit.evaluation.adaptive import DefensePlan, Judgement

#: forwards of the probe
PROBE_DRAWS = 16
#: the standard error aimed at for one sample's probability of a correct answer
TARGET_STANDARD_ERROR = 0.1
#: judging draws per half, at least and at most
MIN_HALF, MAX_HALF = 8, 32


def draws_for_variance(variance: float) -> int:
    """Judging draws (both halves) for a largest per-sample prediction variance ``variance`` (0 to 0.25)."""
    half = math.ceil(max(0.0, variance) / TARGET_STANDARD_ERROR**2)
    return 2 * min(MAX_HALF, max(MIN_HALF, half))


@torch.no_grad()
def judging_draws(plan: DefensePlan, x: Tensor, y: Tensor, seed: int) -> tuple[int, float]:
    """``(draws, variance)``: the judging draws for a randomised plan and the largest per-sample variance of a
    correct prediction measured over :data:`PROBE_DRAWS` seeded forwards of ``x``."""
    with plan.seeded(seed):
        correct = torch.stack([(plan.deployed(x).argmax(dim=1).cpu() == y.cpu()) for _ in range(PROBE_DRAWS)])
    p = correct.double().mean(0)
    variance = float((p * (1 - p)).max()) if p.numel() else 0.0
    return draws_for_variance(variance), variance


def draw_counts(judged: Judgement) -> dict:
    """A row's fields for a judgement's draws (none for one draw)."""
    if judged.selected is None:
        return {}
    return {"draws": judged.draws, "selected": judged.selected.tolist(), "judged": judged.judged.tolist()}
