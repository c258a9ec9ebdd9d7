"""Built-in plugins that adapt third-party attack libraries (torchattacks, ART) to shieldkit's contract.

Each backend describes what it wraps in one data table of :class:`AttackSpec`
rows: the family, the library classes, the capabilities, a translation of
shieldkit's uniform parameters (``steps``, ``step_size``, ``queries`` ...) to the
library's constructor arguments and the backend's behaviour flags (its
:class:`BackendOptions` subclass). :func:`make_attack_class` turns a row into an
:class:`~shieldkit.Attack` subclass whose constructor has a real signature, so
the registry, ``attack_info`` and the catalogue read its parameters like those of
a hand-written attack; each row is assigned to the class's name in the backend's
module (``PgdTorchattacks = _attack(AttackSpec("pgd", ...))``). Nothing here
imports the libraries: a backend imports its library only when an attack runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import inspect
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from shieldkit.core.attack import Attack
from shieldkit.core.errors import InvalidParameterError, MissingDependencyError
from shieldkit.core.seeding import seeded
from shieldkit.core.validation import check_bool, check_choice, check_int, check_number

__all__ = [
    "AttackSpec",
    "BackendAttack",
    "BackendOptions",
    "ComponentSpec",
    "Derived",
    "Param",
    "build_component_class",
    "check_param",
    "class_name_for",
    "component_docstring",
    "count_classes",
    "count_param",
    "draw_seed",
    "from_numpy",
    "init_keywords",
    "is_available",
    "library_class",
    "make_attack_class",
    "require",
    "seeded_call",
    "step_size_param",
    "to_numpy",
]

COMMON_PARAMS = ("eps", "norm", "bounds", "seed")


def is_available(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: sys.modules[module] is None (import blocked)
        return False


def library_class(module: str, name: str) -> type:
    """The class ``name`` of a wrapped library's ``module``, imported on first use (not when shieldkit loads)."""
    return getattr(importlib.import_module(module), name)


def require(module: str, extra: str, what: str) -> None:
    """Raise :class:`MissingDependencyError` saying how to install ``module`` when it is missing."""
    if not is_available(module):
        raise MissingDependencyError(
            f"{what} needs the {module!r} package, which is not installed: pip install shieldkit[{extra}]"
        )


@dataclass(frozen=True)
class Derived:
    """A default computed from ``eps`` at run time: ``factor * eps`` (divided by ``steps`` when ``per_step``)."""

    factor: float
    per_step: bool = False

    def value(self, eps: float | None, steps: int | None) -> float | None:
        if eps is None:
            return None
        if self.per_step and steps:
            return self.factor * eps / steps
        return self.factor * eps

    def __str__(self) -> str:
        factor = "" if self.factor == 1 else f"{self.factor:g} * "
        return f"{factor}eps{' / steps' if self.per_step else ''}"


@dataclass(frozen=True)
class Param:
    """One constructor parameter of a wrapped attack and how it reaches the library.

    Attributes:
        lib: the library's keyword for it (``None``: used by the wrapper itself).
        default: shieldkit's default (``None`` with ``derived`` set: computed at run time).
        rule: validation: ``"int"`` (>= 1), ``"int0"`` (>= 0), ``"int>=N"``, ``"pos"`` (> 0), ``"nonneg"`` (>= 0),
            ``"unit"`` ([0, 1]), ``"bool"``, a tuple of choices, or ``"any"``.
        doc: one line for the docstring and the catalogue.
        values: translation of shieldkit's value to the library's (e.g. ``{"ce": "cross_entropy"}``).
        derived: the run-time default when the value is ``None``.
        pixel: measured in pixel units (rescaled with the bounds where the library assumes ``[0, 1]``).
    """

    lib: str | None
    default: Any
    rule: Any = "any"
    doc: str = ""
    values: Mapping[Any, Any] | None = None
    derived: Derived | None = None
    pixel: bool = False

    def translate(self, value: Any) -> Any:
        """``value`` as the library spells it (through ``values`` when set)."""
        return value if self.values is None else self.values[value]


def count_param(default: int, lib: str | None, doc: str = "iterations") -> Param:
    """A count >= 1 (iterations, queries) under the library keyword ``lib``.

    Each backend binds its usual keyword (``_steps = partial(count_param, lib="steps")``).
    """
    return Param(lib, default, "int", doc)


def step_size_param(factor: float, lib: str, *, pixel: bool) -> Param:
    """The uniform ``step_size``: ``None`` by default, ``factor * eps`` at run time, under the keyword ``lib``."""
    return Param(lib, None, "pos", "step size in pixel units", derived=Derived(factor), pixel=pixel)


@dataclass(frozen=True, kw_only=True)
class BackendOptions:
    """Behaviour flags of one table row, read by the backend's ``_run`` (each backend subclasses this).

    A row passes its backend's class (``options=ArtOptions(probabilities=True)``); an
    unknown flag is a ``TypeError`` when the table is built, at import.

    Attributes:
        rgb: the library handles three-channel images only: a grey image is repeated over three
            channels and the model sees their mean (an exact adapter).
        untargeted_next: the algorithm is targeted only: an untargeted call runs towards the next
            class ``(y + 1) mod K``.
    """

    rgb: bool = False
    untargeted_next: bool = False

    def __post_init__(self) -> None:
        for option in dataclasses.fields(self):
            value = getattr(self, option.name)
            if isinstance(option.default, bool) and not isinstance(value, bool):
                raise TypeError(f"{type(self).__name__}: {option.name} must be True or False, got {value!r}")


@dataclass(frozen=True)
class ComponentSpec:
    """What a row of every backend table has (attack rows: :class:`AttackSpec`; ART's defence rows).

    These fields are keyword-only. Each subclass declares its own positional fields,
    ``params`` the last of them (shieldkit name -> :class:`Param`, uniform names
    wherever they apply), which :meth:`library_values` reads.

    Attributes:
        family: shieldkit's family (the same as native for the same algorithm).
        summary: the docstring's first line.
        reference: the paper.
        randomized: the component draws random numbers (seeded from ``seed``).
        fixed: library keywords always passed (``verbose=False`` ...).
        smoke: parameters for a quick conformance run on a tiny model.
    """

    family: str
    _: KW_ONLY
    summary: str = ""
    reference: str = ""
    randomized: bool = False
    fixed: Mapping[str, Any] = field(default_factory=dict)
    smoke: Mapping[str, Any] = field(default_factory=dict)

    def library_values(self, component: Any, *, eps: float | None = None, scale: float = 1.0,
                       accepted: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The library's keywords for ``component``'s parameters: ``fixed``, then each parameter translated.

        A ``None`` value with a :class:`Derived` default is computed from ``eps`` (and
        ``steps``), pixel quantities are divided by ``scale``, values still ``None`` are
        left out, and so are keywords not in ``accepted`` (when given).
        """
        kwargs: dict[str, Any] = dict(self.fixed)
        steps = getattr(component, "steps", None)
        params: Mapping[str, Param] = self.params  # type: ignore[attr-defined]  # declared by each subclass
        for name, param in params.items():
            if param.lib is None or (accepted is not None and param.lib not in accepted):
                continue
            value = getattr(component, name)
            if value is None and param.derived is not None:
                value = param.derived.value(eps, steps)
            elif value is not None and param.pixel:
                value = value / scale
            if value is not None:
                kwargs[param.lib] = param.translate(value)
        return kwargs


@dataclass(frozen=True)
class AttackSpec(ComponentSpec):
    """One row of a backend's attack table: a family and the library class(es) implementing it.

    The family, the library class(es), the norms and ``params`` may be given by
    position; everything else by keyword. Besides :class:`ComponentSpec`'s fields:

    Attributes:
        classes: the library class, or ``{key: class}`` when the library splits an algorithm
            into classes by norm (or by the parameter named in ``select``).
        norms: supported norms, the default first.
        bounded, targeted, access: the :class:`~shieldkit.Attack` capabilities (with ``randomized``).
        eps_arg: the library's keyword for ``eps`` (``None``: not passed).
        norm_arg: the library's keyword for the norm (``None``: not passed).
        seed_arg: the library's keyword for a seed (filled from ``seed`` or the torch RNG).
        options: the backend's behaviour flags, an instance of its :class:`BackendOptions`
            subclass (``None``: all at their defaults).
        requires: extra modules the library needs for this attack (else it is not registered).
        select: the attribute whose value picks the class when ``classes`` is a mapping.
    """

    classes: str | Mapping[str, str]
    norms: tuple[str, ...]
    params: Mapping[str, Param] = field(default_factory=dict)
    _: KW_ONLY
    bounded: bool = True
    targeted: bool = True
    access: str = "gradient"
    eps_arg: str | None = "eps"
    norm_arg: str | None = None
    seed_arg: str | None = None
    options: BackendOptions | None = None
    requires: tuple[str, ...] = ()
    select: str = "norm"

    def class_for(self, attack: Attack) -> str:
        """The library class an instance runs (chosen by its norm or the ``select`` parameter)."""
        return self.classes if isinstance(self.classes, str) else self.classes[getattr(attack, self.select)]

    def library_classes(self) -> list[str]:
        return [self.classes] if isinstance(self.classes, str) else list(dict.fromkeys(self.classes.values()))


# ------------------------------------------------------------------ validation


def check_param(owner: str, name: str, value: Any, param: Param) -> Any:
    """Validate one value against its :class:`Param` rule (``None`` is allowed when the default is)."""
    if value is None and param.default is None:
        return None
    rule = param.rule
    if isinstance(rule, tuple):
        return check_choice(owner, name, value, rule)
    if isinstance(rule, str) and rule.startswith("int"):
        minimum = 0 if rule == "int0" else int(rule[5:]) if rule.startswith("int>=") else 1
        return check_int(owner, name, value, minimum=minimum)
    if rule == "bool":
        return check_bool(owner, name, value)
    if rule in ("pos", "nonneg", "unit", "real"):
        low = None if rule == "real" else 0.0
        high = 1.0 if rule == "unit" else None
        check_number(owner, name, value, low, high, strict=(rule == "pos"))
        return value
    return value


# ------------------------------------------------------------------ the factory


class BackendAttack(Attack):
    """Base of the generated classes: keeps the spec and translates parameters for the library."""

    spec: ClassVar[AttackSpec]
    backend: ClassVar[str] = ""
    #: the type of ``spec.options`` (each backend's base class names its :class:`BackendOptions` subclass).
    options_type: ClassVar[type[BackendOptions]] = BackendOptions
    project_output: ClassVar[bool] = True
    #: run-time defaults shown by the catalogue (``step_size: "eps / 4"``).
    param_notes: ClassVar[dict[str, str]] = {}

    def library_kwargs(self, scale: float = 1.0) -> dict[str, Any]:
        """The library's constructor keywords for this instance (pixel quantities divided by ``scale``)."""
        spec = self.spec
        eps = None if self.eps is None else self.eps / (scale if self.norm != "l0" else 1.0)
        kwargs = spec.library_values(self, eps=eps, scale=scale)
        if spec.eps_arg is not None and eps is not None:
            kwargs[spec.eps_arg] = self._inside_linf(eps, scale) if self.norm == "linf" else eps
        return kwargs

    def _inside_linf(self, eps: float, scale: float) -> float:
        """The L-inf budget the library gets (in its units): ``eps`` less one float32 rounding step.

        Libraries compute ``x + eps * sign(g)`` in float32, which rounds up to an
        ulp past ``eps`` on about half the pixels; the base class would then move
        each of them back after every call. With ``eps`` one rounding step at the
        largest pixel value smaller, the sum lands inside (any pixel that still
        does not is moved back as before).
        """
        low, high = self.bounds
        margin = torch.finfo(torch.float32).eps * max(1.0, abs(low) / scale, abs(high) / scale)
        return eps - margin if eps > 4 * margin else eps

    def _grey(self, x: Tensor) -> bool:
        """Whether ``x`` is grey and the library needs three channels (``options.rgb``)."""
        return self.spec.options.rgb and x.shape[1] == 1

    def _target(self, y: Tensor, target: Tensor | None, num_classes: int) -> Tensor | None:
        """The labels a targeted-only algorithm aims at on an untargeted call (``options.untargeted_next``)."""
        if target is None and self.spec.options.untargeted_next:
            return (y + 1) % num_classes
        return target


def _param_doc(name: str, param: Param) -> str:
    doc = param.doc or name.replace("_", " ")
    if param.derived is not None:
        doc += f" (``None``: {param.derived})"
    return f"        {name}: {doc}"


def component_docstring(summary: str, library_classes: list[str], backend: str, params: Mapping[str, Param],
                        common: str, reference: str) -> str:
    """The docstring of a generated class: summary, what it wraps, Args, Reference."""
    wraps = ", ".join(f"``{backend}.{name}``" for name in library_classes)
    lines = [summary, "", f"Wraps {wraps}."]
    lines += ["", "    Args:"] + [_param_doc(name, param) for name, param in params.items()]
    lines.append(f"        **common: {common}.")
    if reference:
        lines += ["", "    Reference:", f"        {reference}"]
    return "\n".join(lines)


def build_component_class(class_name: str, base: type, spec: ComponentSpec, common: tuple[str, ...],
                          module: str, attributes: dict[str, Any]) -> type:
    """A subclass of ``base`` whose constructor takes ``spec.params`` (keyword-only, with defaults) and ``**common``.

    The constructor rejects unknown keywords (listing the valid ones), passes
    ``common`` on to ``base.__init__`` first, then validates each parameter with its
    rule and stores it under its own name. Its ``__signature__`` lists the
    parameters, so :func:`shieldkit.core.component.component_params` (the registry,
    ``attack_info``, the catalogue) reads them like a hand-written constructor's.
    The class also gets what every row has: ``family``, ``randomized``, ``smoke_params``
    and ``spec``, besides ``attributes``.
    """
    params = dict(spec.params)
    valid = tuple(params) + common
    base_init = base.__init__

    def __init__(self, **kwargs: Any) -> None:
        unknown = [key for key in kwargs if key not in valid]
        if unknown:
            raise InvalidParameterError(
                f"{self.name}: unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                f"valid parameters: {', '.join(valid)}"
            )
        base_init(self, **{key: kwargs.pop(key) for key in common if key in kwargs})
        owner = self.name
        for name, param in params.items():
            setattr(self, name, check_param(owner, name, kwargs.get(name, param.default), param))

    keyword_only = inspect.Parameter.KEYWORD_ONLY
    __init__.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(name, keyword_only, default=param.default) for name, param in params.items()]
        + [inspect.Parameter("common", inspect.Parameter.VAR_KEYWORD)]
    )
    __init__.__qualname__ = f"{class_name}.__init__"
    __init__.__module__ = module
    namespace = {
        "__init__": __init__,
        "__module__": module,
        "__qualname__": class_name,
        "param_notes": {name: str(p.derived) for name, p in params.items() if p.derived is not None},
        "family": spec.family,
        "randomized": spec.randomized,
        "smoke_params": dict(spec.smoke),
        "spec": spec,
        **attributes,
    }
    return type(class_name, (base,), namespace)


def class_name_for(family: str, backend: str) -> str:
    """``pgd`` + ``torchattacks`` -> ``PgdTorchattacks``."""
    return "".join(part.capitalize() for part in family.split("_")) + backend.capitalize()


def make_attack_class(spec: AttackSpec, base: type[BackendAttack], backend: str, module: str) -> type[BackendAttack]:
    """An :class:`~shieldkit.Attack` subclass for one table row, with a real constructor signature.

    The class is named :func:`class_name_for` ``(spec.family, backend)``; the backend's
    module assigns it to that name. ``spec.options`` must be an instance of
    ``base.options_type`` (``None`` becomes its defaults), else ``TypeError``.
    """
    options = base.options_type() if spec.options is None else spec.options
    if not isinstance(options, base.options_type):
        raise TypeError(f"{spec.family}.{backend}: options must be a {base.options_type.__name__}, "
                        f"got {type(options).__name__}")
    spec = dataclasses.replace(spec, options=options)
    doc = component_docstring(
        spec.summary or f"{spec.family} from {backend}.", spec.library_classes(), backend, spec.params,
        "``eps``, ``norm`` (" + ", ".join(spec.norms) + "), ``bounds``, ``seed``", spec.reference,
    )
    attributes = {
        "__doc__": doc,
        "norms": tuple(spec.norms),
        "bounded": spec.bounded,
        "targeted": spec.targeted,
        "access": spec.access,
        "backend": backend,
    }
    return build_component_class(class_name_for(spec.family, backend), base, spec, COMMON_PARAMS,
                                 module, attributes)


def count_classes(model: Any, x: Tensor) -> int:
    """The number of classes ``model`` outputs: one forward pass on the first image of ``x``."""
    with torch.no_grad():
        return int(model(x[:1]).shape[1])


def init_keywords(cls: type) -> Mapping[str, inspect.Parameter]:
    """The parameters of ``cls``'s constructor (what a library class accepts)."""
    return inspect.signature(cls.__init__).parameters


# ------------------------------------------------------------------- NumPy


def to_numpy(x: Tensor) -> Any:
    """``x`` as a float32 NumPy array on the CPU (for a library that takes NumPy)."""
    import numpy as np

    return x.detach().cpu().numpy().astype(np.float32)


def from_numpy(array: Any, like: Tensor) -> Tensor:
    """A library's NumPy result as a tensor on ``like``'s device, with its dtype."""
    import numpy as np

    return torch.from_numpy(np.asarray(array, dtype=np.float32)).to(device=like.device, dtype=like.dtype)


# --------------------------------------------------------------- randomness


def draw_seed(seed: int | None, generator: torch.Generator | None = None) -> int:
    """``seed``, or a seed drawn from ``generator`` (torch's global RNG, itself seeded by the attack, by default)."""
    if seed is not None:
        return seed
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator).item())


def seeded_call(attack: Attack, device: torch.device) -> tuple[int | None, contextlib.AbstractContextManager]:
    """The seed for a library call and the context that applies it (nothing for deterministic attacks).

    A deterministic attack (``randomized=False``, no library seed) draws no random
    numbers, so it neither consumes the caller's RNG nor pays for seeding.
    """
    spec = attack.spec
    if not spec.randomized and spec.seed_arg is None:
        return None, contextlib.nullcontext()
    seed = draw_seed(attack.seed)
    return seed, seeded(seed, device, every_library=True)

