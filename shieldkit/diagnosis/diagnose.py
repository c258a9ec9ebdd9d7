"""``diagnose``: probe a model from outside for what would make gradient attacks fail or mislead.

The model is whatever the user hands shieldkit, the defence possibly hidden in its
``forward()``; nothing about it is declared. The probe costs ``repeats + 8`` forward
passes on at most ``max_samples`` images:

1. ``repeats`` forwards with a backward pass each, with fresh randomness: the outputs
   (non-finite, probability rows, saturated logits, randomness) and the cross-entropy
   input gradients (missing, zero, non-finite, their spread over repeats).
2. Eight forwards under one fixed seed, reseeded before each (common random numbers: a
   randomised model becomes one fixed draw of itself): a second forward to see which
   samples that reproduces, three random perturbations of decreasing size (input-seeded
   randomness), and three steps along the sign of the margin-loss gradient (shattered
   gradients).

The model's structure is read too, without a forward (:mod:`shieldkit.diagnosis.deployment`):
quantised modules, float16/bfloat16 tensors and forwards decorated to run without autograd,
which a differentiable float32 twin of the model undoes.

The model runs under :class:`~shieldkit.core.guard.ModelStateGuard` (eval mode, frozen
parameters, everything restored after), on its own device and dtype; torch's, NumPy's
and Python's global random states are restored afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shieldkit.core import losses
from shieldkit.core.errors import InvalidModelError
from shieldkit.core.guard import CallCounter, ModelStateGuard
from shieldkit.core.seeding import seed_every_library, seeded
from shieldkit.core.validation import (
    check_bounds,
    check_images,
    check_int,
    check_labels,
    model_placement,
)
from shieldkit.diagnosis import deployment
from shieldkit.diagnosis import gradients as grad_checks
from shieldkit.diagnosis import outputs as output_checks
from shieldkit.diagnosis import randomness as random_checks
from shieldkit.diagnosis.records import CHECKS, Diagnosis, Finding

logger = logging.getLogger(__name__)

OWNER = "diagnose"
#: Perturbation sizes of the input-seeded check, as fractions of the pixel range (largest first).
SEEDED_STEPS = (1e-3, 1e-4, 1e-5)
#: Step sizes of the shattered-gradient check, as fractions of the pixel range: the scale of
#: an attack's steps (a PGD step at eps=0.03..0.3 is 0.003..0.03), where the gradient must be useful.
SHATTERED_STEPS = (1e-2, 3e-3, 1e-3)
#: Output changes within this many ulps of the output's magnitude are float noise.
SEEDED_FLOOR_ULPS = 64
#: A first-order prediction must exceed this many ulps of the output's magnitude to be judged.
SHATTERED_FLOOR_ULPS = 1024


def diagnose(model: nn.Module, x: Tensor, y: Tensor, *, bounds=(0.0, 1.0), seed: int | None = 0,
             repeats: int = 8, max_samples: int = 64) -> Diagnosis:
    """Diagnose ``model`` from outside: randomness, gradients and outputs that would fool an evaluation.

    Args:
        model: the classifier as deployed, images in ``bounds`` to ``[B, K]`` outputs.
        x: images ``[B, C, H, W]`` inside ``bounds`` (the first ``max_samples`` are probed).
        y: their labels ``[B]``.
        bounds: the pixel range ``(low, high)``.
        seed: seeds the probe's random draws (``None``: draw from the current RNG state);
            the caller's RNG states are restored either way.
        repeats: forwards (each with a backward) with fresh randomness, at least 2.
        max_samples: how many samples to probe, at least 1.

    Returns:
        A :class:`Diagnosis` with one finding per check of :data:`CHECKS`.

    Reference:
        Athalye, Carlini, Wagner. Obfuscated Gradients Give a False Sense of Security. ICML 2018.
        Croce, Hein. Reliable evaluation of adversarial robustness with an ensemble of diverse
        parameter-free attacks. ICML 2020 (its randomness, softmax-output and zero-gradient checks).
        Carlini et al. On Evaluating Adversarial Robustness. arXiv:1902.06705, 2019.
    """
    if not isinstance(model, nn.Module):
        raise InvalidModelError(f"{OWNER}: model must be a torch.nn.Module, got {type(model).__name__}")
    bounds = check_bounds(bounds, OWNER)
    if seed is not None:
        check_int(OWNER, "seed", seed, minimum=0)
    check_int(OWNER, "repeats", repeats, minimum=2)
    check_int(OWNER, "max_samples", max_samples, minimum=1)
    check_images(x, bounds, "x")
    check_labels(y, x.shape[0], None, "y")
    device, dtype = model_placement(model)
    x = x[:max_samples].detach().to(device, dtype)
    y = y[:max_samples].to(device).long()

    with ModelStateGuard(model, OWNER), CallCounter(model) as counter, _isolated_rng(device, seed) as fixed_seed:
        probe = _Probe(model, x, y, bounds, fixed_seed)
        diagnosis_parts = probe.run(repeats)
    findings, noise = diagnosis_parts
    diagnosis = Diagnosis(findings=findings, gradient_noise=noise, samples=x.shape[0], forwards=counter.forwards)
    logger.info("diagnose: %d samples, %d forwards, flags: %s%s", diagnosis.samples, diagnosis.forwards,
                ", ".join(diagnosis.flags) or "none",
                "" if noise is None else f", gradient noise {noise:.3g}")
    return diagnosis


@contextlib.contextmanager
def _isolated_rng(device: torch.device, seed: int | None) -> Iterator[int]:
    """Fork torch's RNG (CPU and the model's GPU), NumPy's and Python's; yield the fixed-draw seed."""
    if seed is None:  # one draw from the caller's stream fixes every draw; the stream is left as it was
        with torch.random.fork_rng(devices=[]):
            seed = int(torch.randint(0, 2**31 - 1, ()).item())
    with seeded(seed, device, every_library=True):
        yield seed


def _loss_dtype(outputs: Tensor) -> Tensor:
    """Outputs in at least float32 (a half model's loss is taken in float32, as attacks do)."""
    return outputs.to(torch.promote_types(outputs.dtype, torch.float32))


class _Probe:
    """The forwards of one diagnosis, sharing the images, labels and fixed seed."""

    def __init__(self, model: nn.Module, x: Tensor, y: Tensor, bounds: tuple[float, float], fixed_seed: int):
        self.model, self.x, self.y, self.bounds, self.fixed_seed = model, x, y, bounds, fixed_seed
        self.samples = x.shape[0]

    def forward(self, inputs: Tensor) -> Tensor:
        outputs = self.model(inputs)
        if not isinstance(outputs, Tensor) or outputs.dim() != 2 or outputs.shape[0] != inputs.shape[0] \
                or outputs.shape[1] < 2:
            got = tuple(outputs.shape) if isinstance(outputs, Tensor) else type(outputs).__name__
            raise InvalidModelError(f"{OWNER}: the model must return [B, K] outputs with K >= 2, got {got}")
        return outputs

    def fixed(self, inputs: Tensor) -> Tensor:
        """A forward under the fixed seed: the same random draw every time."""
        seed_every_library(self.fixed_seed)
        return self.forward(inputs)

    def run(self, repeats: int) -> tuple[tuple[Finding, ...], float | None]:
        outputs, gradients, missing = self._repeated(repeats)
        finite = output_checks.finite_rows(outputs)
        probability = output_checks.probability_outputs(outputs[0], finite)
        # On probabilities, log-probabilities are the logits up to a constant: the checks below
        # then measure the model's function, not the flatness of softmax.
        analysed = _LogProbabilities() if probability.found else _Identity()
        findings = {
            "nonfinite_outputs": output_checks.nonfinite_outputs(outputs),
            "probability_outputs": probability,
            "saturated_logits": output_checks.saturated_logits(outputs[0], finite),
            "random_forward": _with_dropout_hint(random_checks.random_forward(outputs, finite), self.model),
            "missing_gradients": grad_checks.missing_gradients(missing, self.samples),
            "deployed_precision": deployment.deployed_precision(self.model),
        }
        noise = None
        if gradients is None:
            for check, threshold in (("zero_gradients", grad_checks.ZERO_GRADIENT_MAX_SHARE),
                                     ("nonfinite_gradients", 0.0),
                                     ("shattered_gradients", grad_checks.SHATTERED_MAX_LOG_RATIO)):
                findings[check] = grad_checks.not_measured(check, threshold, "the model has no input gradient")
        else:
            findings["zero_gradients"] = grad_checks.zero_gradients(gradients)
            findings["nonfinite_gradients"] = grad_checks.nonfinite_gradients(gradients)
            noise = grad_checks.gradient_noise(gradients)
        input_seeded, shattered = self._fixed_draw(analysed, finite, gradients is not None)
        findings["input_seeded_randomness"] = input_seeded
        if shattered is not None:
            findings["shattered_gradients"] = shattered
        return tuple(findings[check] for check in CHECKS), noise

    # ------------------------------------------------------------ phase 1

    def _repeated(self, repeats: int) -> tuple[Tensor, Tensor | None, str | None]:
        """``repeats`` forwards with fresh randomness, each with a cross-entropy backward while gradients flow."""
        outputs, gradients, missing = [], [], None
        for _ in range(repeats):
            inputs = self.x.clone().requires_grad_(True)
            with torch.enable_grad():
                out = self.forward(inputs)
                if not outputs:
                    check_labels(self.y, self.samples, out.shape[1], "y")
                if missing is None:
                    gradient, missing = self._gradient(out, inputs)
                    if gradient is not None:
                        gradients.append(gradient)
            outputs.append(out.detach())
        stacked = torch.stack(gradients) if missing is None else None
        return torch.stack(outputs), stacked, missing

    def _gradient(self, out: Tensor, inputs: Tensor) -> tuple[Tensor | None, str | None]:
        if not out.requires_grad:
            return None, ("the output does not require grad (the forward cuts the graph: "
                          ".detach(), NumPy, torch.no_grad or a comparison)")
        loss = F.cross_entropy(_loss_dtype(out), self.y, reduction="sum")  # sum: each row's own gradient
        try:
            (gradient,) = torch.autograd.grad(loss, inputs, allow_unused=True)
        except Exception as error:  # whatever backward raises is the finding
            return None, f"backward raised {type(error).__name__}: {str(error).splitlines()[0][:160]}"
        if gradient is None:
            return None, "the loss does not depend on the input"
        return gradient.detach(), None

    # ------------------------------------------------------------ phase 2

    def _fixed_draw(self, analysed, finite: Tensor, has_gradient: bool) -> tuple[Finding, Finding | None]:
        x, (low, high) = self.x, self.bounds
        span = high - low
        inputs = x.clone().requires_grad_(has_gradient)
        with torch.enable_grad():
            reference = self.fixed(inputs)
        with torch.no_grad():
            again = self.fixed(x)
        reference_values = analysed(reference.detach())
        scale = 1 + reference_values.abs().amax(1)
        ulp = torch.finfo(reference.dtype).eps
        reproducible = finite & torch.isfinite(again).all(1) & (
            (analysed(again) - reference_values).abs().amax(1) <= random_checks.RANDOM_TOLERANCE * scale)

        input_seeded, slopes = self._seeded(analysed, reference_values, reproducible, scale * SEEDED_FLOOR_ULPS * ulp)
        if not has_gradient or not reference.requires_grad:
            return input_seeded, None
        # Input-seeded samples are excluded: their loss changes randomly with any step, which
        # that check already reports.
        deterministic = reproducible & ~(slopes < random_checks.SEEDED_MAX_SLOPE)
        floor = scale * SHATTERED_FLOOR_ULPS * ulp
        margin = -losses.margin(analysed(reference), self.y)
        try:
            (gradient,) = torch.autograd.grad(margin.sum(), inputs, allow_unused=True)
        except Exception:  # the cross-entropy gradient existed; a margin that has none is not judged
            gradient = None
        if gradient is None:
            return input_seeded, grad_checks.not_measured("shattered_gradients", grad_checks.SHATTERED_MAX_LOG_RATIO,
                                                    "the margin loss has no input gradient")
        largest = max(SHATTERED_STEPS) * span
        direction = gradient.sign()
        direction = torch.where((x - largest < low) & (direction < 0), 0, direction)
        direction = torch.where((x + largest > high) & (direction > 0), 0, direction)
        slope = (gradient.double() * direction).flatten(1).sum(1)
        predicted, measured, judged = [], [], []
        with torch.no_grad():
            for step in SHATTERED_STEPS:
                h = step * span
                moved = -losses.margin(analysed(self.fixed(x + h * direction)), self.y)
                change = moved.double() - margin.detach().double()
                prediction = h * slope
                predicted.append(prediction)
                measured.append(change)
                judged.append(deterministic & torch.isfinite(change) & torch.isfinite(prediction)
                              & (prediction.abs() > floor))
        shattered = grad_checks.shattered_gradients(torch.stack(predicted), torch.stack(measured),
                                                    torch.stack(judged))
        return input_seeded, shattered

    def _seeded(self, analysed, reference_values: Tensor, reproducible: Tensor,
                floor: Tensor) -> tuple[Finding, Tensor]:
        """Random sign perturbations of decreasing size; returns the finding and the per-sample slopes.

        The outputs at ``x + h*e`` for the three step sizes and at ``x`` give three differences
        between neighbouring points, at distances ``h1-h2``, ``h2-h3`` and ``h3``. Smooth: each
        difference scales with its distance (slope 1). Input-seeded noise: every difference is
        as large as any other (slope 0). Piecewise constant (rounding, thresholds): most
        differences are exactly zero, a jump shows in one of them at most; such a sample is
        not input-seeded (its slope counts as +inf).
        """
        x, (low, high) = self.x, self.bounds
        span = high - low
        steps = tuple(step * span for step in SEEDED_STEPS)
        distances = (steps[0] - steps[1], steps[1] - steps[2], steps[2])
        resolution = 4 * torch.finfo(x.dtype).eps * max(1.0, abs(low), abs(high))
        nan_slopes = torch.full((self.samples,), float("nan"), device=x.device, dtype=torch.float64)
        if min(steps) <= resolution:
            return (Finding("input_seeded_randomness", False, 0.0, float("nan"), random_checks.SEEDED_MAX_SLOPE,
                            f"not measured: {x.dtype} cannot represent a perturbation of {min(steps):.0e}"),
                    nan_slopes)
        generator = torch.Generator().manual_seed(self.fixed_seed + 1)
        signs = (torch.randint(0, 2, x.shape, generator=generator) * 2 - 1).to(x.device, x.dtype)
        # Point inward at the bounds so every perturbed image stays a valid image.
        signs = torch.where(x - steps[0] < low, 1, signs)
        signs = torch.where(x + steps[0] > high, -1, signs).to(x.dtype)
        points = []
        with torch.no_grad():
            for h in steps:
                points.append(analysed(self.fixed(x + h * signs)))
        points.append(reference_values)
        changes = torch.stack([(points[k] - points[k + 1]).abs().amax(1) for k in range(3)])
        moves = changes > floor
        judged = reproducible & torch.isfinite(changes).all(0) & moves.any(0)
        slopes = random_checks.log_log_slopes(changes, distances)
        slopes = torch.where(moves.all(0), slopes, torch.full_like(slopes, float("inf")))
        slopes = torch.where(judged, slopes, nan_slopes)
        return random_checks.input_seeded_randomness(slopes, distances), slopes


class _Identity:
    def __call__(self, outputs: Tensor) -> Tensor:
        return outputs.double()


class _LogProbabilities:
    def __call__(self, outputs: Tensor) -> Tensor:
        return outputs.double().clamp_min(torch.finfo(torch.float32).tiny).log()


def _with_dropout_hint(finding: Finding, model: nn.Module) -> Finding:
    """A random forward whose randomness is dropout baked into an exported graph: the user's fix is to export
    after ``model.eval()``, not EOT, so the finding says so beside what it measured."""
    if not finding.found:
        return finding
    dropout = deployment.active_dropout(model)
    if not dropout:
        return finding
    return dataclasses.replace(finding, detail=f"{finding.detail}; the graph has active dropout ({dropout[0]}"
                               f"{f' and {len(dropout) - 1} more' if len(dropout) > 1 else ''}): export after "
                               "model.eval() if it is not meant to be random")
