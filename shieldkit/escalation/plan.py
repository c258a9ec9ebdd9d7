"""From a diagnosis to an ordered list of remedies, with no hint from the user.

Each :class:`Remedy` names the findings that chose it, builds an attack view of
the opaque model (or none: the score-based fallback attacks the model itself) and
carries the attack settings it implies. Output fixes (probabilities, saturated
logits) are composed under every gradient remedy; randomness is averaged (EOT)
under every remedy that differentiates the model. The list is ordered by how
likely each remedy is to work, and always ends with ``score_based``.

Reference:
    Athalye, Carlini, Wagner. Obfuscated Gradients Give a False Sense of Security. ICML 2018.
    Tramer, Carlini, Brendel, Madry. On Adaptive Attacks to Adversarial Example Defenses. NeurIPS 2020.
    Croce, Hein. Reliable evaluation of adversarial robustness with an ensemble of diverse
    parameter-free attacks. ICML 2020 (Square as the score-based check).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shieldkit.core.errors import InvalidParameterError
from shieldkit.core.validation import check_bounds, check_int, check_number
from shieldkit.diagnosis.gradients import gradient_noise
from shieldkit.escalation.auto_bpda import AutoBPDAView
from shieldkit.escalation.eot import MAX_DRAWS, EOTView, eot_draws
from shieldkit.escalation.logits import LogProbabilityView, NormalizedLogitsView
from shieldkit.escalation.smoothing import SmoothedView
from shieldkit.escalation.surrogate import SurrogateView, distill_surrogate
from shieldkit.escalation.twin import TwinView

#: Findings that say autograd's gradient is absent or useless.
GRADIENT_CUT = ("missing_gradients", "zero_gradients", "nonfinite_gradients")
#: Queries of the score-based fallback (AutoAttack's Square budget).
QUERIES = 5000
#: The draws each query of the score-based fallback averages on a randomised model (each query costs as many
#: forwards).
SCORE_BASED_DRAWS = 8

ViewBuilder = Callable[[nn.Module, Tensor], nn.Module]


class DiagnosisLike(Protocol):
    """What the plan reads from :class:`shieldkit.diagnosis.Diagnosis`."""

    gradient_noise: float | None

    @property
    def flags(self) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class AttackSettings:
    """The attack a remedy implies.

    Attributes:
        attack: the registered attack to run (``"pgd"``; ``"square"`` for the fallback).
        loss: its loss (``"margin"`` wherever the outputs' scale cannot be trusted).
        draws: random draws the view already averages (EOT), for the record.
        queries: the score-based attack's query budget.
        early_stop: keep each sample's first fooling iterate; right where the view's values are
            the deployed model's own deterministic outputs (not for a randomised model, where
            one fooling draw of the average is not a fooled model).
    """

    attack: str = "pgd"
    loss: str = "ce"
    draws: int = 1
    queries: int | None = None
    early_stop: bool = False

    def params(self) -> dict[str, Any]:
        """Keyword arguments for ``create_attack(attack, eps=..., **params)`` besides the threat model."""
        if self.attack == "square":
            return {} if self.queries is None else {"queries": self.queries}
        return {"loss": self.loss, "early_stop": self.early_stop}


@dataclass(frozen=True)
class Remedy:
    """One escalation: a named attack view and the settings to attack it with.

    Attributes:
        name: ``twin``, ``eot``, ``auto_bpda``, ``auto_bpda_identity``, ``smoothing``, ``jitter_smoothing``,
            ``log_probabilities``, ``normalized_logits``, ``surrogate``, ``direct`` or ``score_based``.
        reason: the findings that chose it.
        settings: the attack it implies.
        build: ``(model, x) -> view`` (``x``: the images under attack, which the
            surrogate is distilled on); ``None`` attacks the model itself.
    """

    name: str
    reason: str
    settings: AttackSettings = field(default_factory=AttackSettings)
    build: ViewBuilder | None = field(default=None, repr=False, compare=False)

    def view(self, model: nn.Module, x: Tensor) -> nn.Module:
        """The module to attack for this remedy."""
        return model if self.build is None else self.build(model, x)


#: Remedies that do not follow the model's own gradients (a surrogate's transfer, a score-based search):
#: what they break that the gradient attacks missed is the masking checklist's "black-box beats
#: white-box" signal, so the evaluation counts them as black-box.
GRADIENT_FREE_REMEDIES = frozenset({"surrogate", "score_based"})


def _describe(diagnosis: Any, checks: tuple[str, ...]) -> str:
    parts = []
    for check in checks:
        finding = getattr(diagnosis, "finding", None)
        try:
            share = finding(check).share if finding is not None else None
        except (KeyError, LookupError, AttributeError):
            share = None
        parts.append(check if share is None else f"{check} ({share:.0%} of samples)")
    return ", ".join(parts)


def plan_remedies(
    diagnosis: DiagnosisLike,
    *,
    bounds: tuple[float, float] = (0.0, 1.0),
    max_draws: int = MAX_DRAWS,
    smoothing_samples: int = 64,
    sigma: float | None = None,
    queries: int = QUERIES,
    seed: int = 0,
) -> tuple[Remedy, ...]:
    """The remedies a diagnosis calls for, most likely to work first, ending with ``score_based``.

    Args:
        diagnosis: what :func:`shieldkit.diagnosis.diagnose` found (its ``flags`` and
            ``gradient_noise`` are read).
        bounds: the pixel range (the smoothing noise and the surrogate's copies scale with it).
        max_draws: the most EOT draws (see :func:`~shieldkit.escalation.eot.eot_draws`).
        smoothing_samples: noisy forwards per smoothed gradient.
        sigma: the smoothing noise (``None``: 5% of the pixel range).
        queries: the score-based attack's budget.
        seed: the surrogate's distillation seed.
    """
    owner = "plan_remedies"
    flags = getattr(diagnosis, "flags", None)
    if flags is None:
        raise InvalidParameterError(f"{owner}: diagnosis must be a Diagnosis (with .flags), got {type(diagnosis).__name__}")
    low, high = check_bounds(bounds, owner)
    check_int(owner, "max_draws", max_draws, minimum=1)
    check_int(owner, "smoothing_samples", smoothing_samples, minimum=2)
    check_int(owner, "queries", queries, minimum=1)
    check_int(owner, "seed", seed, minimum=0)
    sigma = 0.05 * (high - low) if sigma is None else check_number(owner, "sigma", sigma, 0.0, strict=True)
    found = set(flags)

    # Output fixes come first and sit under every other view.
    output_checks: tuple[str, ...] = ()
    wraps: list[type[nn.Module]] = []
    if "probability_outputs" in found:
        output_checks += ("probability_outputs",)
        wraps.append(LogProbabilityView)
    if "saturated_logits" in found:
        output_checks += ("saturated_logits",)
        wraps.append(NormalizedLogitsView)
    loss = "margin" if output_checks else "ce"

    # a deployment (int8, half precision, autograd switched off) is differentiated through the float model it came
    # from under every gradient remedy; its values stay the deployed model's
    deployed = "deployed_precision" in found

    def outputs(model: nn.Module) -> nn.Module:
        if deployed:
            model = TwinView(model)
        for wrap in wraps:
            model = wrap(model)
        return model

    randomized = "random_forward" in found
    noise = getattr(diagnosis, "gradient_noise", None)
    draws = eot_draws(noise, cap=max_draws) if randomized else 1

    def averaged(model: nn.Module, x: Tensor | None = None) -> nn.Module:
        """The outputs fixed, and averaged over the draws the attacked view's gradient noise asks for: measured
        on the BPDA view of ``x`` where the model's own gradient is cut (the diagnosis could not measure it)."""
        model = outputs(model)
        if not randomized:
            return model
        chosen = draws
        if noise is None and x is not None:
            chosen = eot_draws(measure_gradient_noise(AutoBPDAView(model), x), cap=max_draws)
        return EOTView(model, chosen) if chosen > 1 else model

    random_note = f"; averaged over {draws} draws (random_forward)" if draws > 1 else ""
    remedies: list[Remedy] = []

    def add(name: str, checks: tuple[str, ...], build: ViewBuilder | None, note: str = "",
            remedy_loss: str | None = None) -> None:
        reason = _describe(diagnosis, checks + output_checks) + note
        settings = AttackSettings(loss=remedy_loss or loss, draws=draws, early_stop=not randomized)
        remedies.append(Remedy(name, reason, settings, build))

    cut = tuple(c for c in GRADIENT_CUT if c in found)
    shattered = ("shattered_gradients",) if "shattered_gradients" in found else ()
    seeded = ("input_seeded_randomness",) if "input_seeded_randomness" in found else ()

    if "deployed_precision" in found:  # int8, half precision or autograd switched off: the float model it came from
        add("twin", ("deployed_precision",), lambda m, x: averaged(m, x), random_note)
    if cut:
        add("auto_bpda", cut, lambda m, x: AutoBPDAView(averaged(m, x)), random_note)
    if shattered:
        add("auto_bpda_identity", shattered, lambda m, x: AutoBPDAView(averaged(m, x), preprocessing="identity"),
            random_note)
    if seeded:
        # autograd through the noisy copies needs a gradient: BPDA under it where one is cut
        add("jitter_smoothing", seeded,
            lambda m, x: SmoothedView(AutoBPDAView(outputs(m)) if cut else outputs(m), sigma=sigma,
                                      samples=max(2, smoothing_samples // 4), estimator="autograd"))
    if randomized and not (cut or shattered):
        add("eot", ("random_forward",), lambda m, x: averaged(m))
    if cut or shattered or seeded:
        add("smoothing", cut + shattered + seeded,
            lambda m, x: SmoothedView(outputs(m), sigma=sigma, samples=smoothing_samples))
    if output_checks and not (cut or shattered or seeded or randomized):
        add(remedy_name_for_outputs(output_checks), (), lambda m, x: outputs(m))
    if cut or shattered or seeded:
        add("surrogate", cut + shattered + seeded,
            lambda m, x: SurrogateView(m, distill_surrogate(m, x, bounds=(low, high), seed=seed)),
            "; transfer from a surrogate distilled on the images under attack",
            remedy_loss="margin")  # the surrogate's logits and the model's outputs differ in scale
    if not remedies:
        remedies.append(Remedy("direct", "no finding: the model's own gradients",
                               AttackSettings(loss="ce", early_stop=True)))
    reason = "always last: a score-based attack needs no gradient (flags: " + (", ".join(sorted(found)) or "none") + ")"
    # the loss's noise, not the gradient's, decides Square's steps: every randomised model gets the average
    score_draws = SCORE_BASED_DRAWS if randomized else 1
    if randomized:  # Square accepts a step only if the loss averaged over draws improves (not one lucky draw)
        reason += f"; its loss averaged over {score_draws} draws"
    remedies.append(Remedy("score_based", reason,
                           AttackSettings(attack="square", loss="margin", queries=queries, draws=score_draws),
                           (lambda m, x: EOTView(m, score_draws)) if score_draws > 1 else None))
    return tuple(remedies)


def measure_gradient_noise(view: nn.Module, x: Tensor, repeats: int = 8, samples: int = 32) -> float | None:
    """The relative noise of ``view``'s input gradient over ``repeats`` backward passes of the cross-entropy at its
    own predictions on the first ``samples`` images (what :func:`eot_draws` reads; ``None``: no usable gradient)."""
    x = x[:samples].detach()
    gradients = []
    try:
        with torch.no_grad():
            labels = view(x).argmax(dim=1)
        for _ in range(repeats):
            inputs = x.clone().requires_grad_(True)
            with torch.enable_grad():
                loss = F.cross_entropy(view(inputs).float(), labels, reduction="sum")
                if not loss.requires_grad:
                    return None
                (gradient,) = torch.autograd.grad(loss, inputs, allow_unused=True)
            if gradient is None:
                return None
            gradients.append(gradient)
    except Exception:  # noqa: BLE001 - a view that cannot be differentiated has no usable gradient to measure
        return None
    return gradient_noise(torch.stack(gradients))


def remedy_name_for_outputs(checks: tuple[str, ...]) -> str:
    """The output fix's remedy name when it is the only one."""
    return "log_probabilities" if "probability_outputs" in checks else "normalized_logits"

