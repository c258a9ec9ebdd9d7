"""Gradient checks: missing, zero, non-finite and shattered input gradients, and their noise.

Missing, zero and non-finite gradients and the gradient noise are measured on the
cross-entropy loss, the loss a default attack follows. The shattered-gradient check
uses the margin loss (label logit minus the largest other logit, on log-probabilities
when the model outputs probabilities): it is piecewise linear in the logits, so a first
order prediction of its change is exact for a piecewise-linear network up to kinks, which
the exponential tail of cross-entropy would not be.

Reference:
    Athalye, Carlini, Wagner. Obfuscated Gradients Give a False Sense of Security:
    Circumventing Defenses to Adversarial Examples. ICML 2018 (shattered and
    stochastic gradients, section 3).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from shieldkit.diagnosis.records import Finding

#: Share of samples with exactly zero gradients above which gradient attacks are blind
#: (the evaluation's zero-gradient check uses the same 10%).
ZERO_GRADIENT_MAX_SHARE = 0.10
#: Per step, a first-order prediction within a factor of 2 of the measured change agrees.
SHATTERED_MAX_LOG_RATIO = math.log(2.0)


def per_sample_norm(tensor: Tensor) -> Tensor:
    """``[..., B]`` L2 norms over everything after the batch dimension."""
    return tensor.flatten(-3).double().norm(dim=-1)


def missing_gradients(reason: str | None, samples: int) -> Finding:
    """The input gradient does not exist: backward raised, or the output is cut from the input.

    measured: share of samples without a gradient (all or none); found above 0.
    """
    if reason is None:
        return Finding("missing_gradients", False, 0.0, 0.0, 0.0, "the loss has an input gradient")
    return Finding("missing_gradients", True, 1.0, 1.0, 0.0, f"no input gradient: {reason}")


def not_measured(check: str, threshold: float, why: str) -> Finding:
    """A gradient check that could not run (no gradients)."""
    return Finding(check, False, 0.0, math.nan, threshold, f"not measured: {why}")


def zero_gradients(gradients: Tensor) -> Finding:
    """Per sample, the loss gradient is exactly zero (or subnormal: below float resolution) in every repeat.

    ``gradients`` is ``[R, B, C, H, W]``. measured: share of samples; found above
    :data:`ZERO_GRADIENT_MAX_SHARE`.
    """
    tiny = torch.finfo(gradients.dtype).tiny
    largest = gradients.abs().flatten(2).amax(dim=(0, 2))
    zero = (largest < tiny) & torch.isfinite(largest)
    share = zero.float().mean().item()
    return Finding("zero_gradients", share > ZERO_GRADIENT_MAX_SHARE, share, share, ZERO_GRADIENT_MAX_SHARE,
                   f"gradients are exactly zero on {share:.0%} of samples")


def nonfinite_gradients(gradients: Tensor) -> Finding:
    """Any NaN or inf in a sample's gradient in any repeat. measured: share of samples; found above 0."""
    bad = ~torch.isfinite(gradients).flatten(2).all(2).all(0)
    share = bad.float().mean().item()
    return Finding("nonfinite_gradients", share > 0, share, share, 0.0,
                   f"gradients are NaN or inf on {share:.0%} of samples")


def gradient_noise(gradients: Tensor) -> float | None:
    """Mean over samples of ``mean_i ||g_i - mean g|| / ||mean g||`` (samples with a finite, non-zero mean)."""
    mean = gradients.double().mean(0)
    mean_norm = per_sample_norm(mean)
    spread = per_sample_norm(gradients.double() - mean).mean(0)
    usable = torch.isfinite(spread) & torch.isfinite(mean_norm) & (mean_norm > 0)
    if not bool(usable.any()):
        return None
    return (spread[usable] / mean_norm[usable]).mean().item()


def shattered_gradients(predicted: Tensor, measured: Tensor, judged: Tensor) -> Finding:
    """The first-order prediction of the loss change along the gradient disagrees with the measured change.

    Args:
        predicted: ``[S, B]`` first-order predictions ``h * g.d`` for each step ``h``.
        measured: ``[S, B]`` measured changes ``L(x + h d) - L(x)``.
        judged: ``[S, B]`` whether each (step, sample) can be judged: the prediction is well
            above the loss's float resolution and the sample is reproducible and deterministic.

    Per sample, the disagreement is the median over judged steps of ``|log(measured/predicted)|``
    (infinite when they differ in sign); a sample needs two judged steps. measured: the
    median disagreement over those samples; found above :data:`SHATTERED_MAX_LOG_RATIO` (a factor of 2).
    """
    samples = predicted.shape[1]
    ratio = measured.double() / predicted.double()
    disagreement = torch.where(ratio > 0, ratio.clamp_min(1e-300).log().abs(), torch.full_like(ratio, math.inf))
    disagreement = torch.where(judged, disagreement, torch.full_like(ratio, math.nan))
    usable = judged.sum(0) >= 2
    if not bool(usable.any()):
        return not_measured("shattered_gradients", SHATTERED_MAX_LOG_RATIO,
                            "no sample has a gradient whose predicted change is above float resolution")
    per_sample = disagreement[:, usable].nanmedian(0).values
    median = per_sample.median().item()
    share = (per_sample > SHATTERED_MAX_LOG_RATIO).sum().item() / samples
    factor = math.exp(median) if math.isfinite(median) else math.inf
    return Finding("shattered_gradients", median > SHATTERED_MAX_LOG_RATIO, share, median, SHATTERED_MAX_LOG_RATIO,
                   f"first-order loss prediction off by a median factor {factor:.3g} along the gradient "
                   f"(judged on {int(usable.sum())} samples); disagrees on {share:.0%} of samples")
