"""Checks on the model's outputs alone: non-finite values, probability rows, saturated logits."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from shieldkit.diagnosis.records import Finding

#: A top-1 margin beyond which every other class's softmax probability underflows float32
#: (exp(-margin) < the smallest normal float32): the cross-entropy gradient is then exactly zero.
SATURATION_MARGIN = -math.log(torch.finfo(torch.float32).tiny)
#: Share of rows that must be probability distributions for the model to count as ending in softmax.
PROBABILITY_MIN_SHARE = 0.5


def finite_rows(outputs: Tensor) -> Tensor:
    """``[B]``: samples whose outputs are finite in every repeat (``outputs`` is ``[R, B, K]``)."""
    return torch.isfinite(outputs).flatten(2).all(2).all(0)


def nonfinite_outputs(outputs: Tensor) -> Finding:
    """Any NaN or inf among the outputs of any repeated forward. measured: share of samples affected."""
    bad = ~finite_rows(outputs)
    share = bad.float().mean().item()
    return Finding("nonfinite_outputs", share > 0, share, share, 0.0,
                   f"outputs are NaN or inf on {share:.0%} of samples")


def probability_outputs(logits: Tensor, finite: Tensor) -> Finding:
    """Rows non-negative and summing to one: the model ends in softmax.

    measured: share of samples whose row is a probability distribution (within a few
    ulps per class of the output's dtype); found above :data:`PROBABILITY_MIN_SHARE`.
    """
    rows = logits.double()
    tolerance = max(1e-4, 8 * rows.shape[1] * torch.finfo(logits.dtype).eps)
    distribution = (rows.min(1).values >= -tolerance) & ((rows.sum(1) - 1).abs() <= tolerance) & finite
    share = distribution.float().mean().item()
    return Finding("probability_outputs", share > PROBABILITY_MIN_SHARE, share, share, PROBABILITY_MIN_SHARE,
                   f"outputs are probability rows (non-negative, summing to 1) on {share:.0%} of samples")


def saturated_logits(logits: Tensor, finite: Tensor) -> Finding:
    """Logits so large that softmax saturates.

    measured: the median top-1 margin (largest minus second-largest logit) over finite
    samples; found when it exceeds :data:`SATURATION_MARGIN` (87.3), i.e. on most samples
    the other classes' probabilities underflow and cross-entropy has no gradient.
    """
    if not bool(finite.any()):
        return Finding("saturated_logits", False, 0.0, math.nan, SATURATION_MARGIN,
                       "not measured: no sample has finite outputs")
    top2 = logits[finite].double().topk(2, dim=1).values
    margins = top2[:, 0] - top2[:, 1]
    saturated = margins > SATURATION_MARGIN
    share = saturated.sum().item() / logits.shape[0]
    median = margins.median().item()
    return Finding("saturated_logits", median > SATURATION_MARGIN, share, median, SATURATION_MARGIN,
                   f"median top-1 logit margin {median:.3g} (softmax saturates beyond {SATURATION_MARGIN:.1f}); "
                   f"saturated on {share:.0%} of samples")
