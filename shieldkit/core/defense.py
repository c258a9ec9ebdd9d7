"""Defence base classes by kind, DefendedModel and its attack views.

| kind        | what it is                         | main methods                      |
| ----------- | ---------------------------------- | --------------------------------- |
| transform   | input preprocessing                | ``__call__(x)``, ``wrap(model)``  |
| postprocess | changes the model's outputs        | ``wrap(model)``                   |
| detector    | flags inputs                       | ``fit``, ``score``, ``detect``    |
| trainer     | makes a robust model               | ``fit(model, train_data) -> model`` |

Every defence declares ``differentiable`` and ``randomized``. ``wrap(model)``
returns a :class:`DefendedModel`, whose :meth:`~DefendedModel.attack_view` is the
module an adaptive attacker differentiates: BPDA, a surrogate gradient or the
exact one, averaged over ``eot`` random draws. Because a view is just a model,
every attack of every backend becomes adaptive without knowing it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from shieldkit.core.component import Component
from shieldkit.core.eot import eot_average
from shieldkit.core.errors import InvalidInputError, InvalidParameterError
from shieldkit.core.guard import ModelStateGuard
from shieldkit.core.validation import (
    check_bounds,
    check_choice,
    check_images,
    check_int,
    check_logits,
    check_number,
    model_device,
)

KINDS = ("transform", "postprocess", "detector", "trainer")
GRADIENTS = ("exact", "bpda", "surrogate")
#: The prediction of a certified defence on a sample where it abstains.
ABSTAIN = -1


@dataclass
class Certificate:
    """What a certified defence's ``certify`` found, per sample (CPU tensors).

    Attributes:
        predictions: the defended classifier's class, ``ABSTAIN`` (-1) where it abstains.
        radii: the certified radius in the defence's ``certifies`` norm (``0`` where it
            abstains): no perturbation smaller than it changes the prediction (for a
            probabilistic certificate: with probability at least ``1 - alpha``).
        forwards: forward passes of the model; queries: images forwarded.
        seconds: wall-clock time.
    """

    predictions: Tensor
    radii: Tensor
    forwards: int
    queries: int
    seconds: float

    @property
    def abstained(self) -> Tensor:
        return self.predictions == ABSTAIN


class Defense(Component):
    """Base class of every defence.

    Capabilities (class attributes):
        family: lower snake_case name, the same in every source.
        kind: one of ``transform``, ``postprocess``, ``detector``, ``trainer``.
        differentiable: autograd through the defence gives useful gradients.
        randomized: two calls on the same input may differ.

    What its adaptive evaluation needs (read by :mod:`shieldkit.evaluation.adaptive`;
    the defaults suit most defences):
        adaptive_gradient: the backward pass adaptive gradient attacks use on a
            transform or postprocess defence: ``"exact"``, ``"bpda"`` or
            ``"surrogate"``; ``None`` chooses from ``differentiable`` and whether
            the class gives a ``surrogate``.
        certifies: the norm in which ``certify(model, x, y) -> Certificate`` certifies
            radii (``None``: no certificate). A certified defence also implements
            ``disproves(model, x, classes) -> [B] bool`` (its classifier, with
            confidence, does not give ``classes`` on ``x``); the evaluation reports
            the certified accuracy beside the empirical one and checks the two agree.
        adaptive_attacks: the defence's own adaptive attacks, names or
            ``(name, params)`` pairs, run against the deployed model with the
            grid's ``eps`` and ``norm``; registered ones that do not support the
            grid's norm are left out (an unregistered name is an error). Override :meth:`adaptive_attack` for
            a choice that depends on the instance.

    Args:
        bounds: valid pixel range ``(low, high)``.
        seed: makes a randomised defence reproducible; ``None`` uses torch's global RNG.
    """

    kind: ClassVar[str] = ""
    differentiable: ClassVar[bool] = False
    randomized: ClassVar[bool] = False
    adaptive_gradient: ClassVar[str | None] = None
    adaptive_attacks: ClassVar[tuple[Any, ...]] = ()
    certifies: ClassVar[str | None] = None
    #: ``fit`` options of a quick conformance run (trainers); ``smoke_params`` holds the constructor's.
    smoke_fit_options: ClassVar[dict[str, Any]] = {}

    def __init__(self, *, bounds: tuple[float, float] = (0.0, 1.0), seed: int | None = None):
        self.bounds = check_bounds(bounds, self.name)
        if seed is not None:
            check_int(self.name, "seed", seed, minimum=0)
        self.seed = seed
        self._rng: torch.Generator | None = None

    def rng(self, device: torch.device) -> torch.Generator | None:
        """The defence's own random-number generator when seeded (its randomness does not disturb the attacker's).

        ``None`` when unseeded: torch's global RNG is used. Not to be confused
        with a GAN generator (:mod:`shieldkit.gan`).
        """
        if self.seed is None:
            return None
        if self._rng is None or self._rng.device != torch.device(device):
            self._rng = torch.Generator(device=device)
            self._rng.manual_seed(self.seed)
        return self._rng

    def reseed(self, seed: int | None) -> None:
        """Restart the defence's randomness from ``seed`` (``None``: torch's global RNG from now on).

        The evaluation reseeds a randomised defence per unit of work, so results
        do not depend on the order units run in.
        """
        if seed is not None:
            check_int(self.name, "seed", seed, minimum=0)
        self.seed = seed
        self._rng = None  # rebuilt from the new seed on next use

    def adaptive_attack(self) -> list[Any]:
        """The defence's own adaptive attacks (default: :attr:`adaptive_attacks`).

        Each is a name, ``(name, params)`` or an :class:`~shieldkit.Attack`; it runs
        against the deployed model (it may read ``model.defense`` and ``model.model``).
        """
        return list(self.adaptive_attacks)

    def adaptive_view(self, deployed: nn.Module) -> nn.Module | None:
        """The module adaptive gradient attacks differentiate instead of the one chosen
        from :attr:`adaptive_gradient` (default ``None``: that one)."""
        return None

    def _check_x(self, x: Tensor, name: str = "x") -> Tensor:
        return check_images(x, self.bounds, name)


# ----------------------------------------------------------------- transforms


class TransformDefense(Defense):
    """Input preprocessing. Subclasses implement ``_transform`` and may give a ``surrogate``.

    ``surrogate(x)`` is a differentiable approximation used by
    ``attack_view(gradient="surrogate")``; the default is the identity (BPDA).
    """

    kind = "transform"

    def __call__(self, x: Tensor) -> Tensor:
        """The defended input: ``[B, C, H, W]`` in, the same shape inside ``bounds`` out."""
        self._check_x(x)
        return self.transform(x)

    def transform(self, x: Tensor) -> Tensor:
        """``_transform`` without input validation (used inside models and views)."""
        low, high = self.bounds
        return self._transform(x).clamp(low, high)

    def _transform(self, x: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement _transform")

    def surrogate(self, x: Tensor) -> Tensor:
        return x

    def wrap(self, model: nn.Module) -> DefendedModel:
        """The deployed model: ``model(defence(x))``."""
        return DefendedModel(model, self)


class PostprocessDefense(Defense):
    """Changes a model's outputs. Subclasses implement ``_postprocess(logits) -> logits``."""

    kind = "postprocess"

    def postprocess(self, logits: Tensor) -> Tensor:
        return self._postprocess(logits)

    def _postprocess(self, logits: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement _postprocess")

    def wrap(self, model: nn.Module) -> DefendedModel:
        """The deployed model: ``defence(model(x))``."""
        return DefendedModel(model, self)


class DefendedModel(nn.Module):
    """A model with a transform or postprocess defence in front of / behind it, as deployed.

    Args:
        model: the classifier.
        defense: a :class:`TransformDefense` or :class:`PostprocessDefense`.
    """

    def __init__(self, model: nn.Module, defense: TransformDefense | PostprocessDefense):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise InvalidParameterError(f"{defense.name}.wrap: model must be an nn.Module, got {type(model).__name__}")
        if not isinstance(defense, (TransformDefense, PostprocessDefense)):
            raise InvalidParameterError(f"DefendedModel: cannot wrap with a {type(defense).__name__} defence")
        self.model = model
        self.defense = defense

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(self.defense, TransformDefense):
            return self.model(self.defense.transform(x))
        return self.defense.postprocess(self.model(x))

    def attack_view(self, gradient: str = "bpda", eot: int = 1) -> AttackView:
        """The module an adaptive attacker differentiates.

        Args:
            gradient: ``"exact"`` (autograd through the defence; only for
                ``differentiable`` defences), ``"bpda"`` (forward through the
                defence, backward as the identity: Athalye et al. 2018) or
                ``"surrogate"`` (forward through the defence, backward through
                its differentiable surrogate).
            eot: average the output over this many forward passes (Expectation
                over Transformation, for ``randomized`` defences).
        """
        check_choice(f"{self.defense.name}.attack_view", "gradient", gradient, GRADIENTS)
        check_int(f"{self.defense.name}.attack_view", "eot", eot, minimum=1)
        if gradient == "exact" and not self.defense.differentiable:
            raise InvalidParameterError(
                f"{self.defense.name} is not differentiable; use attack_view(gradient='bpda') or 'surrogate'"
            )
        return AttackView(self, gradient, eot)

    def extra_repr(self) -> str:
        return f"defense={self.defense!r}"


class AttackView(nn.Module):
    """A defended model whose backward pass is what an adaptive attacker needs.

    Its forward values are those of the deployed model (averaged over ``eot``
    draws), so success measured on a view is success on the deployed model.
    """

    def __init__(self, defended: DefendedModel, gradient: str, eot: int):
        super().__init__()
        self.defended = defended
        self.gradient = gradient
        self.eot = eot

    def forward(self, x: Tensor) -> Tensor:
        return eot_average(lambda _: self._one_pass(x), self.eot)

    def _one_pass(self, x: Tensor) -> Tensor:
        defended, defense = self.defended, self.defended.defense
        if isinstance(defense, TransformDefense):
            if self.gradient == "exact":
                return defended.model(defense.transform(x))
            with torch.no_grad():
                value = defense.transform(x)
            path = defense.surrogate(x) if self.gradient == "surrogate" else x
            return defended.model(path + (value - path).detach())
        logits = defended.model(x)
        if self.gradient == "exact":
            return defense.postprocess(logits)
        with torch.no_grad():
            value = defense.postprocess(logits)
        return logits + (value - logits).detach()

    def extra_repr(self) -> str:
        return f"gradient={self.gradient!r}, eot={self.eot}"


# ------------------------------------------------------------------ detectors


class DetectorDefense(Defense):
    """Flags adversarial inputs. Subclasses implement ``_score(model, x) -> [B]`` (higher = more suspicious).

    ``fit`` sets ``threshold`` so that a share ``fpr`` of clean inputs is flagged.
    """

    kind = "detector"
    threshold: float | None = None

    def fit(self, model: nn.Module, x_clean: Tensor, fpr: float = 0.05) -> DetectorDefense:
        """Fit the threshold at false-positive rate ``fpr`` on clean images ``x_clean``."""
        check_number(self.name, "fpr", fpr, 0.0, 1.0, strict=True)
        if not isinstance(x_clean, Tensor) or x_clean.dim() != 4 or x_clean.shape[0] == 0:
            shape = tuple(x_clean.shape) if isinstance(x_clean, Tensor) else type(x_clean).__name__
            raise InvalidInputError(f"{self.name}.fit: x_clean must be a non-empty batch [B, C, H, W], got {shape}")
        self._fit(model, self._check_x(x_clean, "x_clean"))
        scores = self.score(model, x_clean).float()
        self.threshold = torch.quantile(scores, 1.0 - fpr).item()
        self.fpr = fpr
        return self

    def _fit(self, model: nn.Module, x_clean: Tensor) -> None:
        """Learn what the scores need (statistics, squeezers); the threshold is set by ``fit``."""

    def score(self, model: nn.Module, x: Tensor) -> Tensor:
        """Per-sample suspicion score ``[B]`` (on the CPU)."""
        self._check_x(x)
        device = model_device(model)
        with ModelStateGuard(model), torch.no_grad():
            return self._score(model, x.to(device)).detach().float().cpu()

    def _score(self, model: nn.Module, x: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement _score")

    def detect(self, model: nn.Module, x: Tensor) -> Tensor:
        """``[B]`` bool: flagged as adversarial."""
        if self.threshold is None:
            raise InvalidParameterError(f"{self.name}: call fit(model, x_clean, fpr=...) before detect()")
        return self.score(model, x) > self.threshold


# ------------------------------------------------------------------- trainers


class TrainerDefense(Defense):
    """Makes a robust model. Subclasses implement ``_fit(model, train_data, **options) -> model`` and name
    the options it takes in ``fit_options``."""

    kind = "trainer"
    #: the keyword options ``fit`` accepts: ``fit`` refuses any other by name before training, and the
    #: evaluation accepts only these in a configuration (passing ``quiet``, ``checkpoint_dir`` and ``resume``
    #: when declared). ``None``: not declared, options go to ``_fit`` unchecked
    fit_options: ClassVar[tuple[str, ...] | None] = None

    def fit(self, model: nn.Module, train_data: Any, **options: Any) -> nn.Module:
        """Train ``model`` (or a copy of it) to be robust and return the trained model."""
        if not isinstance(model, nn.Module):
            raise InvalidParameterError(f"{self.name}.fit: model must be an nn.Module, got {type(model).__name__}")
        unknown = [name for name in options if self.fit_options is not None and name not in self.fit_options]
        if unknown:
            raise InvalidParameterError(
                f"{self.name}.fit: unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                f"valid options: {', '.join(self.fit_options or ()) or 'none'}"
            )
        return self._fit(model, train_data, **options)

    def _fit(self, model: nn.Module, train_data: Any, **options: Any) -> nn.Module:
        raise NotImplementedError(f"{type(self).__name__} must implement _fit")


def logits_of(model: nn.Module, x: Tensor) -> Tensor:
    """A model's logits with the output shape checked."""
    return check_logits(model(x), x.shape[0])
