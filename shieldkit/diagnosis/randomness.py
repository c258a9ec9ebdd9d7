"""Randomness checks: repeated forwards that disagree, and outputs that jump under tiny input changes.

The second catches randomness seeded from the input itself (deterministic per input, so
repeated forwards agree). For a smooth or piecewise-linear model the output change
shrinks in proportion to the perturbation; for a piecewise-constant model (rounding) it
is zero at tiny steps; only a model that draws new randomness for every new input keeps
changing by the same amount however small the step.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from shieldkit.diagnosis.records import Finding

#: Relative logit spread (over repeated forwards) above float noise: the forward is random.
RANDOM_TOLERANCE = 1e-4
#: Below this log-log slope of output change against step size, the output does not shrink
#: with the step (smooth models: 1; input-seeded randomness: about 0).
SEEDED_MAX_SLOPE = 0.5


def relative_spread(outputs: Tensor) -> Tensor:
    """``[B]``: largest change of any output across repeats, relative to the output's scale."""
    spread = (outputs - outputs[:1]).abs().flatten(2).amax(dim=(0, 2))
    scale = 1 + outputs[0].abs().flatten(1).amax(1)
    return spread / scale


def random_forward(outputs: Tensor, finite: Tensor) -> Finding:
    """Repeated forwards of the same input disagree.

    measured: the largest relative logit spread over samples (``max|z_r - z_0| / (1 + max|z_0|)``);
    found above :data:`RANDOM_TOLERANCE`. share: samples whose logits change; the detail also
    gives the share whose predicted class changes.
    """
    if not bool(finite.any()):
        return Finding("random_forward", False, 0.0, math.nan, RANDOM_TOLERANCE,
                       "not measured: no sample has finite outputs")
    spread = relative_spread(outputs[:, finite].double())
    changed = spread > RANDOM_TOLERANCE
    predictions = outputs[:, finite].argmax(2)
    flipped = (predictions != predictions[:1]).any(0)
    samples = outputs.shape[1]
    share = changed.sum().item() / samples
    measured = spread.max().item()
    return Finding("random_forward", measured > RANDOM_TOLERANCE, share, measured, RANDOM_TOLERANCE,
                   f"repeated forwards change the logits on {share:.0%} of samples "
                   f"and the prediction on {flipped.sum().item() / samples:.0%} ({outputs.shape[0]} forwards)")


def log_log_slopes(changes: Tensor, distances: tuple[float, ...]) -> Tensor:
    """``[B]``: least-squares slope of log(change) against log(distance); ``changes`` is ``[S, B]``."""
    log_distances = torch.tensor(distances, dtype=torch.float64, device=changes.device).log()
    centred = log_distances - log_distances.mean()
    logs = changes.double().clamp_min(torch.finfo(torch.float64).tiny).log()
    return (centred[:, None] * (logs - logs.mean(0))).sum(0) / centred.pow(2).sum()


def input_seeded_randomness(slopes: Tensor, distances: tuple[float, ...]) -> Finding:
    """The output jumps under tiny input perturbations far more than a smooth function would.

    Args:
        slopes: ``[B]`` per sample, how the output change scales with the distance between
            perturbed inputs (:func:`log_log_slopes`; +inf where the change vanishes at some
            scale, as for a piecewise-constant model; NaN where the sample cannot be judged:
            not finite, not reproducible under a fixed seed, or its output never moves).
        distances: the distances between the perturbed inputs.

    measured: the median slope over judged samples; found below :data:`SEEDED_MAX_SLOPE`.
    """
    samples = slopes.shape[0]
    judged = ~torch.isnan(slopes)
    if not bool(judged.any()):
        return Finding("input_seeded_randomness", False, 0.0, math.nan, SEEDED_MAX_SLOPE,
                       "not measured: no sample is reproducible under a fixed seed with outputs that move")
    median = slopes[judged].median().item()
    share = (slopes[judged] < SEEDED_MAX_SLOPE).sum().item() / samples
    if math.isinf(median):
        return Finding("input_seeded_randomness", False, share, median, SEEDED_MAX_SLOPE,
                       "the output changes in jumps at some scales and not at others (piecewise constant), "
                       f"not at every scale; does not shrink on {share:.0%} of samples")
    return Finding("input_seeded_randomness", median < SEEDED_MAX_SLOPE, share, median, SEEDED_MAX_SLOPE,
                   f"output change scales as distance^{median:.2f} for input changes "
                   f"{min(distances):.0e}..{max(distances):.0e} (smooth: 1, input-seeded noise: 0); "
                   f"does not shrink on {share:.0%} of samples")
