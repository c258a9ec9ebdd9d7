"""What attacks and defences share: identity (family, source, name), parameters, and construction by name.

An instance's ``source`` (the plugin that registered its class: ``native``,
``torchattacks``, ``art``, a third-party plugin) is part of its name
(``pgd.art``) and so of every error its constructor raises. It is set in one
place: :meth:`Component.create`, which the registry (``create_attack``,
``create_defense``), the evaluation and the backends all use. An instance built
by calling its class directly has no source and is named by its family alone.
"""

from __future__ import annotations

import contextvars
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from shieldkit.core.errors import InvalidParameterError

#: (class, source) of the instance :meth:`Component.create` is constructing; read by ``__new__`` so that
#: the source is known before the constructor validates anything (its errors name ``pgd.art``).
_CREATING: contextvars.ContextVar[tuple[type, str] | None] = contextvars.ContextVar("shieldkit_creating",
                                                                                   default=None)


def component_params(cls: type) -> dict[str, Any]:
    """Keyword parameters a component's constructor accepts, with their defaults.

    Walks the MRO while constructors pass ``**kwargs`` up, so an attack that
    declares ``def __init__(self, *, steps=10, **common)`` also lists the base
    class's ``eps``, ``norm``, ``bounds`` and ``seed``.
    """
    params: dict[str, Any] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        signature = inspect.signature(init)
        passes_on = False
        for name, parameter in signature.parameters.items():
            if name == "self" or parameter.kind is parameter.VAR_POSITIONAL:
                continue
            if parameter.kind is parameter.VAR_KEYWORD:
                passes_on = True
                continue
            default = None if parameter.default is parameter.empty else parameter.default
            params.setdefault(name, default)
        if not passes_on:
            break
    return params


def jsonable(value: Any, opaque: Callable[[Any], str] = repr) -> Any:
    """Parameter values as JSON data: scalars as they are, containers element by element, anything else
    (a module, a tensor, an attack) as ``opaque(value)``; a non-finite float as its repr."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v, opaque) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v, opaque) for v in value]
    return opaque(value)


@dataclass(frozen=True)
class EfficacyExemption:
    """A component's statement that it is weak by design: not built to meet the conformance kit's
    efficacy clause on the kit's trained digits CNN, and why.

    Declared on the class (:attr:`Component.efficacy_exemption`), or, for a component its author
    cannot annotate (a wrapper of another library), in shieldkit's table by registered name
    (:data:`shieldkit.exemptions.EFFICACY_EXEMPTIONS`). Either way the kit still fails a component
    that returns its input unchanged.

    Attributes:
        reason: one line, with what was measured; the kit's report and failures quote it.
        fools_some: attacks only. ``True``: the attack still runs on the trained digits and must change
            its input and fool at least one of them. ``False``: that run is skipped, and the attack must
            only change its input somewhere in the kit's runs on the tiny model.
        may_return_input: attacks only, with ``fools_some=False``: not even a changed input is asked, for
            an attack that returns its input where it fails (C&W, EAD) and at the budget tested finds
            nothing on the tiny model either. Better: test it at a budget where it finds something.
    """

    reason: str
    fools_some: bool = False
    may_return_input: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.reason, str) or not self.reason.strip():
            raise InvalidParameterError(f"EfficacyExemption: reason must say why, in one line; got reason={self.reason!r}")
        if self.fools_some and self.may_return_input:
            raise InvalidParameterError("EfficacyExemption: fools_some=True asks for a changed input, so "
                                        "may_return_input=True contradicts it; give one of the two")

    @property
    def requirement(self) -> str:
        """What the efficacy clause still asks, in the words of the kit's report and of docs/backends.md."""
        if self.fools_some:
            return "at least one digit fooled"
        return "not run; may return its input" if self.may_return_input else "not run; changes its input"


@dataclass(frozen=True)
class ParamDefault:
    """One constructor parameter's default, as the signature says it and as the class applies it.

    Attributes:
        name: the keyword.
        default: the signature's default (often ``None`` for "derived").
        effective: the value an instance uses when the keyword is not given, where the class
            can say it without being built (``DEFAULT_EPS[norm]`` for ``eps``); else ``default``.
        rule: how a ``None`` default is resolved, in words (``"eps / 4"``); empty when it is not.
    """

    name: str
    default: Any
    effective: Any
    rule: str = ""


class Component:
    """Base of :class:`~shieldkit.Attack` and :class:`~shieldkit.Defense`: who it is and how it was built.

    Class attributes:
        family: lower snake_case name of the algorithm, the same in every source.
        smoke_params: constructor parameters for a quick run on a tiny model (the
            registry-wide conformance test uses them).
        source: the plugin that registered the class; set per instance by :meth:`create`.
        param_notes: how a parameter whose default is ``None`` is resolved, in words
            (``{"step_size": "eps / 4"}``); read by :meth:`effective_params`, ``shieldkit info``
            and the catalogue.
        efficacy_exemption: ``None`` (held to the conformance kit's full efficacy clause), or an
            :class:`EfficacyExemption` saying why the component is weak by design (a noise
            baseline) and what the kit still asks of it.
    """

    family: ClassVar[str] = ""
    smoke_params: ClassVar[dict[str, Any]] = {}
    param_notes: ClassVar[dict[str, str]] = {}
    efficacy_exemption: ClassVar[EfficacyExemption | None] = None
    source: str = ""

    def __new__(cls, *args: Any, **kwargs: Any):
        instance = super().__new__(cls)
        creating = _CREATING.get()
        if creating is not None and creating[0] is cls:
            instance.source = creating[1]
        return instance

    @classmethod
    def create(cls, source: str = "", **params: Any):
        """An instance named as its plugin registered it (``source``), constructed from ``params``.

        The one construction path for a registered component: the registry, the
        evaluation and the backends call it, never ``__new__`` themselves.
        """
        token = _CREATING.set((cls, source))
        try:
            return cls(**params)
        finally:
            _CREATING.reset(token)

    @property
    def name(self) -> str:
        """``family.source``, e.g. ``pgd.native`` (just the family when not created by name)."""
        family = self.family or type(self).__name__.lower()
        return f"{family}.{self.source}" if self.source else family

    @classmethod
    def effective_params(cls) -> dict[str, ParamDefault]:
        """Every constructor parameter with its signature default and the default the class applies.

        The base class knows only ``param_notes``; subclasses that resolve a ``None``
        default themselves (``Attack``: ``eps`` and ``norm``) fill in ``effective``.
        """
        notes = cls.param_notes
        return {name: ParamDefault(name, default, default, notes.get(name, "") if default is None else "")
                for name, default in component_params(cls).items()}

    def get_params(self) -> dict[str, Any]:
        """The constructor parameters of this instance."""
        return {name: getattr(self, name, default) for name, default in component_params(type(self)).items()}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"
