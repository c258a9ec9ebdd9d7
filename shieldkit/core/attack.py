"""The Attack base class and AttackResult.

The base class owns the whole attack contract (docs/architecture.md): input validation,
device and dtype placement, the model-state guard, seeding, forward/backward
counting and the final bounds and epsilon-ball check. An algorithm implements
``_run`` only.
"""

from __future__ import annotations

import math
import time
import weakref
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from shieldkit.core.component import Component, ParamDefault
from shieldkit.core.errors import (
    AttackContractError,
    InvalidInputError,
    InvalidModelError,
    InvalidParameterError,
    NoGradientError,
)
from shieldkit.core.guard import CallCounter, ModelStateGuard
from shieldkit.core.seeding import seeded
from shieldkit.core.threat import DEFAULT_EPS, ThreatModel, check_norm, format_eps, norm_of
from shieldkit.core.validation import (
    BOUNDS_TOLERANCE,
    check_images,
    check_int,
    check_labels,
    check_logits,
    model_placement,
    rounding_tolerance,
)

ACCESS_LEVELS = ("gradient", "score", "decision")


#: What torch's autograd says when the model's output does not depend on the input through a graph.
_NO_GRADIENT = ("does not require grad and does not have a grad_fn", "appears to not have been used in the graph")


@dataclass
class AttackResult:
    """What one attack run produced, per sample and in total.

    Attributes:
        x_adv: adversarial images, on the input's device and dtype.
        success: ``[B]`` bool, the model is fooled (untargeted: prediction differs
            from ``y``; targeted: prediction equals ``target``).
        l2, linf: ``[B]`` per-sample perturbation norms.
        forwards, backwards: model forward and backward passes the attack made.
        queries: images forwarded through the model in total (black-box budget).
        seconds: wall-clock time of the attack.
        y, target: the labels used (``y`` is the model's prediction when not given).
        predictions: ``[B]`` the model's predictions on ``x_adv``.
        info: attack-specific extras (e.g. DeepFool's iterations per sample).
    """

    x_adv: Tensor
    success: Tensor
    l2: Tensor
    linf: Tensor
    forwards: int
    backwards: int
    queries: int
    seconds: float
    attack: str
    y: Tensor
    predictions: Tensor
    target: Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def success_rate(self) -> float:
        """Share of samples the attack fooled."""
        return self.success.float().mean().item()

    def __repr__(self) -> str:
        return (
            f"AttackResult({self.attack}: {int(self.success.sum())}/{len(self.success)} fooled, "
            f"median l2={self.l2.median().item():.4g}, max linf={self.linf.max().item():.4g}, "
            f"forwards={self.forwards}, backwards={self.backwards}, {self.seconds:.3f}s)"
        )


class Attack(Component):
    """Base class of every attack: native, wrapped from a backend, or from a plugin.

    Subclasses set the class attributes below and implement ``_run``; they take
    their own parameters as keyword arguments and pass the common ones on with
    ``**common``.

    Args:
        eps: perturbation budget in ``norm``. Bounded attacks default to
            ``DEFAULT_EPS[norm]``; for unbounded (minimal-perturbation) attacks
            ``eps`` is optional, and when given the result is projected onto the
            epsilon-ball (as foolbox does), so success means "fooled within eps".
        norm: one of the class's ``norms`` (the first is the default).
        bounds: valid pixel range ``(low, high)``.
        seed: makes the attack deterministic; ``None`` uses torch's global RNG.

    Capabilities (class attributes, checked against behaviour by ``shieldkit.testing``):
        family: lower snake_case name of the algorithm, the same in every source.
        norms: norms the attack supports.
        bounded: the algorithm takes ``eps`` as a budget.
        targeted: the attack accepts ``target=`` labels.
        access: ``"gradient"``, ``"score"`` (probabilities only) or ``"decision"`` (labels only).
        randomized: output depends on randomness (deterministic under ``seed`` all the same).
        smoke_params: parameters that make a run on a 6x1x16x16 batch take well under a second.
    """

    norms: ClassVar[tuple[str, ...]] = ("linf",)
    bounded: ClassVar[bool] = True
    targeted: ClassVar[bool] = True
    access: ClassVar[str] = "gradient"
    randomized: ClassVar[bool] = False
    #: project the output onto the threat model instead of rejecting it when it leaves: set by
    #: wrapped libraries, which do not all keep to their own budget (shieldkit's algorithms must).
    project_output: ClassVar[bool] = False

    def __init__(
        self,
        *,
        eps: float | None = None,
        norm: str | None = None,
        bounds: tuple[float, float] = (0.0, 1.0),
        seed: int | None = None,
    ):
        owner = self.name
        norm = check_norm(norm if norm is not None else self.norms[0], self.norms, owner)
        if eps is None and self.bounded:
            eps = DEFAULT_EPS[norm]
        try:
            self.threat = ThreatModel(norm=norm, eps=eps, bounds=bounds)
        except InvalidParameterError as error:
            raise InvalidParameterError(f"{owner}: {error}") from None
        if seed is not None:
            check_int(owner, "seed", seed, minimum=0)
        self.seed = seed

    @classmethod
    def effective_params(cls) -> dict[str, ParamDefault]:
        """The constructor's defaults, with ``norm`` (the first of ``norms``) and ``eps`` resolved.

        A bounded attack's ``eps`` defaults to ``DEFAULT_EPS[norm]``; an unbounded one
        has no budget unless given one.
        """
        params = super().effective_params()
        norm = cls.norms[0]
        if "norm" in params and params["norm"].default is None:
            params["norm"] = replace(params["norm"], effective=norm, rule=f"the first of {', '.join(cls.norms)}")
        if "eps" in params and params["eps"].default is None:
            if cls.bounded:
                others = "; ".join(f"{other}: {format_eps(DEFAULT_EPS[other])}" for other in cls.norms[1:])
                rule = "DEFAULT_EPS[norm]" + (f"; {others}" if others else "")
                params["eps"] = replace(params["eps"], effective=DEFAULT_EPS[norm], rule=rule)
            else:
                params["eps"] = replace(params["eps"], rule="no budget (minimal perturbation); when given, "
                                                            "the result is projected onto the eps-ball")
        return params

    # The common parameters, readable under their constructor names.
    @property
    def eps(self) -> float | None:
        return self.threat.eps

    @property
    def norm(self) -> str:
        return self.threat.norm

    @property
    def bounds(self) -> tuple[float, float]:
        return self.threat.bounds

    def project(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """``x_adv`` moved into the epsilon-ball around ``x`` (when ``eps`` is set) and the bounds."""
        return self.threat.project(x_adv, x)

    # ----------------------------------------------------------------- API

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor | None = None, *, target: Tensor | None = None) -> Tensor:
        """Adversarial examples for ``x``: ``[B, C, H, W]`` in, the same shape out."""
        return self._execute(model, x, y, target, evaluate=False).x_adv

    def run(self, model: nn.Module, x: Tensor, y: Tensor | None = None, *, target: Tensor | None = None) -> AttackResult:
        """Attack ``model`` on ``x`` and report per-sample success, norms and cost.

        Args:
            model: ``nn.Module`` from images in ``bounds`` to logits ``[B, K]``.
            x: images ``[B, C, H, W]``, floating point, inside ``bounds``.
            y: true labels ``[B]``; the model's predictions when ``None``.
            target: target labels ``[B]`` for a targeted attack.
        """
        return self._execute(model, x, y, target, evaluate=True)

    def _run(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor | tuple[Tensor, dict]:
        """The algorithm: validated inputs on the model's device in, adversarial images out.

        ``model`` is in eval mode with frozen parameters; ``x`` is a private copy, ``y``
        and ``target`` are copies too. Return ``x_adv`` or ``(x_adv, info)``, leaving the
        model in eval mode, its parameters and the labels as they were (each is
        checked as soon as ``_run`` returns). Bounds and the epsilon-ball are checked
        (and float error projected away) by the base class.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement _run")

    # ---------------------------------------------------------------- contract

    def _execute(self, model, x, y, target, *, evaluate: bool) -> AttackResult:
        name = self.name
        if not isinstance(model, nn.Module):
            raise InvalidModelError(f"{name}: model must be a torch.nn.Module, got {type(model).__name__}")
        check_images(x, self.bounds, "x")
        if target is not None and not self.targeted:
            raise InvalidParameterError(f"{name} is untargeted only; it does not accept target=")
        device, dtype = model_placement(model, x.dtype)
        x_in = x.detach().to(device=device, dtype=dtype)
        batch = x_in.shape[0]
        started = time.perf_counter()
        with ModelStateGuard(model, name), CallCounter(model) as counter, _ClassWatch(model, x_in) as classes:
            counter.enabled = False
            if y is None:
                with torch.no_grad():
                    y = check_logits(model(x_in), batch).argmax(dim=1)
            y = classes.checked("y", y)
            if target is not None:
                target = classes.checked("target", target)
            # The algorithm gets copies of the labels: the caller's (and the y that success is
            # computed against) can never change, and a write to the copies is named below.
            given = {"y": y.clone()} if target is None else {"y": y.clone(), "target": target.clone()}
            parameters = [(p, p._version) for p in model.parameters()]
            counter.enabled = True
            with seeded(self.seed, device):
                try:
                    output = self._run(model, x_in.clone(), given["y"], given.get("target"))
                except RuntimeError as error:
                    if self.access == "gradient" and any(text in str(error) for text in _NO_GRADIENT):
                        raise NoGradientError(name) from error
                    raise
            counter.enabled = False
            # Checked before the predictions below, which a model left in train mode would get wrong.
            self._check_untouched(model, parameters, {"y": y, "target": target}, given)
            x_adv, info = output if isinstance(output, tuple) else (output, {})
            x_adv = self._enforce_contract(x_adv, x_in)
            if evaluate:
                with torch.no_grad():
                    predictions = check_logits(model(x_adv), batch).argmax(dim=1)
        seconds = time.perf_counter() - started
        if evaluate:
            success = predictions == target if target is not None else predictions != y
            delta = x_adv - x_in
            l2, linf = norm_of(delta, "l2").cpu(), norm_of(delta, "linf").cpu()
        else:  # attack(model, x, y) returns x_adv only
            predictions = success = torch.zeros(0, dtype=torch.bool)
            l2 = linf = torch.zeros(0)
        return AttackResult(
            x_adv=x_adv.to(device=x.device, dtype=x.dtype),
            success=success.cpu(),
            l2=l2,
            linf=linf,
            forwards=counter.forwards,
            backwards=counter.backwards,
            queries=counter.queries,
            seconds=seconds,
            attack=name,
            y=y.cpu(),
            predictions=predictions.cpu(),
            target=None if target is None else target.cpu(),
            info=info,
        )

    def _check_untouched(self, model: nn.Module, parameters: list, labels: dict, given: dict) -> None:
        """Raise if the algorithm changed its labels, the model's eval mode or its parameters in place."""
        name = self.name
        for label, copy in given.items():
            changed = int((copy != labels[label]).sum()) if copy.shape == labels[label].shape else copy.numel()
            if changed:
                raise _breach("labels not mutated", f"{name} wrote to its labels {label} in place ({changed} of "
                              f"{labels[label].numel()} changed); labels are inputs, an attack must not change them")
        written = {id(p) for p, version in parameters if p._version != version}
        if written:
            names = [prefix for prefix, p in model.named_parameters() if id(p) in written]
            raise _breach("model parameters unchanged",
                          f"{name} wrote to the model's parameters in place ({', '.join(names)}); an attack must "
                          "not change the model, and shieldkit does not copy parameters to undo it")
        training = [prefix or "(the model itself)" for prefix, module in model.named_modules() if module.training]
        if training:
            shown = ", ".join(training[:3]) + (", ..." if len(training) > 3 else "")
            raise _breach("left the model in train mode",
                          f"{name} left the model in train mode ({len(training)} modules: {shown}); it runs in eval "
                          "mode and must return it so (the guard restores the caller's modes afterwards, but "
                          "the predictions on x_adv would be made in train mode)")

    def _enforce_contract(self, x_adv: object, x: Tensor) -> Tensor:
        """Check the algorithm's output; project float error away, raise on real violations.

        An output already inside the bounds and the epsilon-ball is returned as is
        (projecting it would only add rounding, and costs a few passes over the batch).
        """
        name = self.name
        if not isinstance(x_adv, Tensor) or x_adv.shape != x.shape:
            found = tuple(x_adv.shape) if isinstance(x_adv, Tensor) else type(x_adv).__name__
            raise _breach("shape", f"{name} returned {found}, expected a tensor of shape {tuple(x.shape)}")
        x_adv = x_adv.detach().to(dtype=x.dtype, device=x.device)
        found_low, found_high = (value.item() for value in torch.aminmax(x_adv))
        if not (math.isfinite(found_low) and math.isfinite(found_high)):  # NaN and inf reach the extrema
            raise _breach("finite output", f"{name} returned non-finite values")
        low, high = self.bounds
        overshoot = max(low - found_low, found_high - high)
        float_error = rounding_tolerance(x.dtype, self.bounds)  # an ulp of float16 is 1e-3 at 1.0
        if overshoot > max(BOUNDS_TOLERANCE, float_error) and not self.project_output:
            raise _breach("bounds", f"{name} left the bounds {self.bounds} by {overshoot:.3g}")
        eps = self.eps
        if eps is None:
            return x_adv if overshoot <= 0 else self.threat.project(x_adv, x)
        # L-inf (the common case) keeps the per-pixel gaps for the rounding fix below.
        gaps = (x_adv - x).abs_() if self.norm == "linf" else None
        distance = (gaps.amax() if gaps is not None else norm_of(x_adv - x, self.norm).max()).item()
        excess = distance - eps
        if self.bounded and excess > max(1e-4 * eps + 1e-6, float_error) and not self.project_output:
            raise _breach(
                "epsilon-ball",
                f"{name} broke its {self.norm} budget: max ||x_adv - x|| = {distance:.6g} > eps = {eps:.6g} "
                f"(by {excess:.3g})"
            )
        if overshoot > 0:
            return self.threat.project(x_adv, x)
        if distance <= self.threat.eps_in(x.dtype):  # compared as the tensors compare
            return x_adv
        if gaps is not None:
            return self.threat.round_inside(x_adv, x, gaps)  # cheaper than a projection for float error
        return self.threat.project(x_adv, x)


def _breach(clause: str, message: str) -> AttackContractError:
    """An :class:`AttackContractError` tagged with the conformance clause it breaks (``error.clause``).

    The conformance kit reports a breach that ``run()`` raises under that clause,
    whatever the check that found it.
    """
    error = AttackContractError(message)
    error.clause = clause
    return error


class _ClassWatch:
    """Checks labels against the model's number of classes ``K`` without a forward pass of its own.

    ``K`` is remembered per model and input shape. When it is known, labels are
    checked before the attack starts (a rejection is confirmed by a real forward
    pass, in case the model changed). When it is not (the first call), a forward
    hook learns it from the attack's first forward pass and checks the labels
    there, before any loss can use them; the same hook re-checks them if a
    model's ``K`` changes between calls (its head was replaced). A probe forward
    pass per call cost a measurable share of a single-step attack, and on a
    randomised defence it drew random numbers that the attack's would then depend on.
    """

    #: model -> {(C, H, W, dtype, device): K}, forgotten with the model.
    _known: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def __init__(self, model: nn.Module, x: Tensor):
        self.model = model
        self.x = x
        self.key = (*x.shape[1:], x.dtype, x.device)
        self.num_classes: int | None = self._known.get(model, {}).get(self.key)
        self._labels: dict[str, Tensor] = {}
        self._handle = None

    def __enter__(self) -> _ClassWatch:
        self._handle = self.model.register_forward_hook(self._on_forward)
        return self

    def __exit__(self, *exc_info) -> None:
        self._handle.remove()

    def checked(self, name: str, labels: object) -> Tensor:
        """``labels`` validated (fully if ``K`` is known) and on the model's device."""
        batch = self.x.shape[0]
        try:
            labels = check_labels(labels, batch, self.num_classes, name)
        except InvalidInputError:
            if self.num_classes is None:
                raise
            # The remembered K may be stale (a new head): the attack's first forward pass decides.
            self.num_classes = None
            labels = check_labels(labels, batch, None, name)
        labels = labels.to(self.x.device)
        self._labels[name] = labels
        return labels

    def _on_forward(self, module, inputs, output) -> None:
        if isinstance(output, Tensor) and output.dim() == 2 and output.shape[1] == self.num_classes:
            return
        given = inputs[0] if inputs and isinstance(inputs[0], Tensor) else None
        if given is None or given.dim() != 4:  # not a batch of images (e.g. inside a torch.func transform)
            return
        self.num_classes = check_logits(output, given.shape[0]).shape[1]
        self._known.setdefault(self.model, {})[self.key] = self.num_classes
        for name, labels in self._labels.items():
            check_labels(labels, labels.shape[0], self.num_classes, name)


