"""The one place names live: list, create and describe attacks, defences, models and datasets.

Names are ``family.source`` (``pgd.native``, ``pgd.torchattacks``). A bare family
resolves by preference: native, torchattacks, art, then other plugins
alphabetically. Patterns are shell-style wildcards (``"pgd*"``, ``"*.art"``)
matched against the full name and the family.
"""

from __future__ import annotations

import fnmatch
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from shieldkit.core.attack import ACCESS_LEVELS, Attack
from shieldkit.core.component import component_params, jsonable
from shieldkit.core.defense import (
    KINDS,
    Defense,
    DetectorDefense,
    PostprocessDefense,
    TrainerDefense,
    TransformDefense,
)
from shieldkit.core.errors import (
    InvalidModelError,
    InvalidParameterError,
    MissingDependencyError,
    PluginError,
    UnknownNameError,
)
from shieldkit.core.threat import NORMS
from shieldkit.plugins.manager import PluginInfo, PluginManager

PREFERRED_SOURCES = ("native", "torchattacks", "art")
FAMILY_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")
_DEFENSE_BASES = {
    "transform": TransformDefense,
    "postprocess": PostprocessDefense,
    "detector": DetectorDefense,
    "trainer": TrainerDefense,
}
_HOOK_OF_KIND = {
    "attack": "register_attacks",
    "defense": "register_defenses",
    "model": "register_models",
    "dataset": "register_datasets",
}


@dataclass(frozen=True)
class Entry:
    """One registered component."""

    kind: str
    family: str
    source: str
    obj: Any
    plugin: PluginInfo

    @property
    def name(self) -> str:
        return f"{self.family}.{self.source}"


def _source_rank(source: str) -> tuple[int, str]:
    if source in PREFERRED_SOURCES:
        return (PREFERRED_SOURCES.index(source), "")
    return (len(PREFERRED_SOURCES), source)


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "_")


class Registry:
    """Holds every registered component; filled lazily from the plugins on first use."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, Entry]] = {kind: {} for kind in _HOOK_OF_KIND}
        self._manager: PluginManager | None = None
        self._lock = threading.RLock()

    @property
    def manager(self) -> PluginManager:
        with self._lock:
            if self._manager is None:
                manager = PluginManager()
                self._manager = manager
                manager.load_all()
                for kind, hook in _HOOK_OF_KIND.items():
                    manager.call_hook(hook, lambda info, kind=kind: self._register_callback(kind, info))
            return self._manager

    def entries(self, kind: str) -> dict[str, Entry]:
        self.manager  # noqa: B018 - loads plugins on first use
        return self._entries[kind]

    def add_plugin(self, plugin: object, name: str) -> PluginInfo:
        """Register an imported plugin object at run time and collect what it registers."""
        manager = self.manager
        info = manager.register(plugin, name)
        if info.status == "ok":
            for kind, hook in _HOOK_OF_KIND.items():
                manager.call_hook(hook, lambda info, kind=kind: self._register_callback(kind, info), only=name)
        return info

    # ---------------------------------------------------------- registration

    def _register_callback(self, kind: str, plugin: PluginInfo) -> Callable:
        def register(obj: Any, name: str | None = None) -> None:
            try:
                entry = self._validate(kind, obj, name, plugin)
            except PluginError as error:
                self.manager_fail(plugin, str(error))
                return
            existing = self._entries[kind].get(entry.name)
            if existing is not None:
                self.manager_fail(plugin, f"{kind} {entry.name!r} is already registered by plugin {existing.plugin.name!r}")
                return
            self._entries[kind][entry.name] = entry
            plugin.registered.append(entry.name)

        register.__doc__ = f"Register one {kind} for plugin {plugin.name!r}."
        return register

    def manager_fail(self, plugin: PluginInfo, reason: str) -> None:
        self._manager._fail(plugin, reason)  # type: ignore[union-attr]

    def _validate(self, kind: str, obj: Any, name: str | None, plugin: PluginInfo) -> Entry:
        where = f"register_{kind}s"
        if kind in ("attack", "defense"):
            base = Attack if kind == "attack" else Defense
            if not (isinstance(obj, type) and issubclass(obj, base)):
                raise PluginError(f"{where}: expected a subclass of shieldkit.{base.__name__}, got {obj!r}")
            family = name or obj.family
            if kind == "attack":
                bad_norms = [n for n in obj.norms if n not in NORMS]
                if not obj.norms or bad_norms:
                    raise PluginError(f"{where}: {obj.__name__}.norms={obj.norms!r} must be a non-empty subset of {NORMS}")
                if obj.access not in ACCESS_LEVELS:
                    raise PluginError(f"{where}: {obj.__name__}.access={obj.access!r} must be one of {ACCESS_LEVELS}")
            else:
                if obj.kind not in KINDS or not issubclass(obj, _DEFENSE_BASES[obj.kind]):
                    raise PluginError(
                        f"{where}: {obj.__name__} must subclass one of TransformDefense, PostprocessDefense, "
                        f"DetectorDefense, TrainerDefense (kind={obj.kind!r})"
                    )
        else:
            if not callable(obj):
                raise PluginError(f"{where}: expected a callable factory, got {obj!r}")
            family = name or getattr(obj, "family", None) or getattr(obj, "__name__", "")
        family = _normalise(family or "")
        if not FAMILY_PATTERN.match(family):
            raise PluginError(f"{where}: family {family!r} of {obj!r} must be lower snake_case (set `family`)")
        return Entry(kind=kind, family=family, source=_normalise(plugin.name), obj=obj, plugin=plugin)

    # --------------------------------------------------------------- lookup

    def resolve(self, kind: str, name: str) -> Entry:
        """The entry for a full name, or for a bare family by source preference."""
        if not isinstance(name, str) or not name.strip():
            raise UnknownNameError(kind, str(name), self.entries(kind))
        entries = self.entries(kind)
        key = _normalise(name)
        if key in entries:
            return entries[key]
        if "." not in key:
            candidates = [e for e in entries.values() if e.family == key]
            if candidates:
                return min(candidates, key=lambda e: _source_rank(e.source))
        family, _, source = key.partition(".")
        plugin = self.manager.plugins.get(source)
        if plugin is not None and plugin.status != "ok":
            reason = "; ".join(plugin.errors)
            if plugin.status == "missing":
                raise MissingDependencyError(f"{kind} {name!r} is unavailable: {reason}")
            raise UnknownNameError(kind, name, entries, hint=f"(plugin {source!r} is {plugin.status}: {reason})")
        raise UnknownNameError(kind, name, entries)

    def select(self, kind: str, pattern: str = "*", source: str | None = None,
               predicate: Callable[[Entry], bool] | None = None) -> list[str]:
        pattern = _normalise(pattern or "*")
        found = []
        for entry in self.entries(kind).values():
            if source is not None and entry.source != _normalise(source):
                continue
            if not (fnmatch.fnmatchcase(entry.name, pattern) or fnmatch.fnmatchcase(entry.family, pattern)):
                continue
            if predicate is not None and not predicate(entry):
                continue
            found.append(entry)
        found.sort(key=lambda e: (e.family, _source_rank(e.source)))
        return [e.name for e in found]

    def create(self, kind: str, name: str, params: dict[str, Any]) -> Any:
        entry = self.resolve(kind, name)
        obj = entry.obj
        if kind in ("attack", "defense"):
            valid = component_params(obj)
            _reject_unknown(entry, params, valid)
            return obj.create(entry.source, **params)
        valid = _callable_params(obj)
        if valid is not None:
            _reject_unknown(entry, params, valid)
        created = obj(**params)
        if kind == "model" and not isinstance(created, nn.Module):
            raise InvalidModelError(f"model factory {entry.name} returned {type(created).__name__}, not an nn.Module")
        return created

    def info(self, kind: str, name: str) -> dict[str, Any]:
        entry = self.resolve(kind, name)
        obj = entry.obj
        doc = (getattr(obj, "__doc__", None) or "").strip()
        record: dict[str, Any] = {
            "name": entry.name,
            "kind": kind,
            "family": entry.family,
            "source": entry.source,
            "plugin": entry.plugin.name,
            "distribution": entry.plugin.distribution,
            "version": entry.plugin.version,
            "object": f"{obj.__module__}.{obj.__qualname__}",
            "summary": doc.splitlines()[0] if doc else "",
        }
        if kind == "attack":
            record.update(norms=list(obj.norms), bounded=obj.bounded, targeted=obj.targeted,
                          access=obj.access, randomized=obj.randomized)
        elif kind == "defense":
            record.update(defense_kind=obj.kind, differentiable=obj.differentiable, randomized=obj.randomized)
        params = component_params(obj) if kind in ("attack", "defense") else (_callable_params(obj) or {})
        record["params"] = {k: jsonable(v) for k, v in params.items()}
        # What an instance uses when a parameter is not given (eps = DEFAULT_EPS[norm], step_size = eps / 4),
        # next to the signature's defaults above, and how each None default is resolved, where the class says.
        defaults = obj.effective_params() if kind in ("attack", "defense") else {}
        record["effective_params"] = {k: jsonable(d.effective) for k, d in defaults.items()} or dict(record["params"])
        record["param_rules"] = {k: d.rule for k, d in defaults.items() if d.rule}
        return record


def _callable_params(obj: Callable) -> dict[str, Any] | None:
    """Keyword parameters of a factory; ``None`` when it accepts ``**kwargs``."""
    import inspect

    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    params = {}
    for name, parameter in signature.parameters.items():
        if parameter.kind is parameter.VAR_KEYWORD:
            return None
        if parameter.kind is parameter.VAR_POSITIONAL:
            continue
        params[name] = None if parameter.default is parameter.empty else parameter.default
    return params


def _reject_unknown(entry: Entry, params: dict[str, Any], valid: dict[str, Any]) -> None:
    unknown = [p for p in params if p not in valid]
    if unknown:
        raise InvalidParameterError(
            f"{entry.name}: unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"valid parameters: {', '.join(valid) or '(none)'}"
        )


_registry = Registry()


def reset_registry() -> None:
    """Forget everything loaded, so that the next call reads the plugins (and environment) again."""
    global _registry
    _registry = Registry()


def get_registry() -> Registry:
    return _registry


# ------------------------------------------------------------ the public API


def list_attacks(pattern: str = "*", source: str | None = None, norm: str | None = None,
                 targeted: bool | None = None, access: str | None = None) -> list[str]:
    """Names of registered attacks matching ``pattern`` (shell wildcards), sorted.

    Args:
        pattern: e.g. ``"pgd*"`` or ``"*.art"``; matched against names and families.
        source: only this source (``"native"``, ``"torchattacks"``, ``"art"``, a plugin).
        norm: only attacks supporting this norm.
        targeted: only attacks that can (``True``) or cannot (``False``) target.
        access: only ``"gradient"``, ``"score"`` or ``"decision"`` attacks.
    """
    def keep(entry: Entry) -> bool:
        cls = entry.obj
        return ((norm is None or norm in cls.norms) and (targeted is None or cls.targeted == targeted)
                and (access is None or cls.access == access))

    return _registry.select("attack", pattern, source, keep)


def create_attack(name: str, **params: Any) -> Attack:
    """An attack by name (``"pgd"``, ``"pgd.art"``) with shieldkit's uniform parameters."""
    return _registry.create("attack", name, params)


def attack_info(name: str) -> dict[str, Any]:
    """Metadata of an attack: source, plugin, capabilities and parameters with defaults."""
    return _registry.info("attack", name)


def list_defenses(pattern: str = "*", source: str | None = None, kind: str | None = None) -> list[str]:
    """Names of registered defences, optionally of one ``kind`` (transform, postprocess, detector, trainer)."""
    return _registry.select("defense", pattern, source, None if kind is None else (lambda e: e.obj.kind == kind))


def create_defense(name: str, **params: Any) -> Defense:
    """A defence by name (``"jpeg"``, ``"jpeg_compression.art"``)."""
    return _registry.create("defense", name, params)


def defense_info(name: str) -> dict[str, Any]:
    """Metadata of a defence: kind, capabilities and parameters with defaults."""
    return _registry.info("defense", name)


def list_models(pattern: str = "*", source: str | None = None) -> list[str]:
    """Names of registered model factories."""
    return _registry.select("model", pattern, source)


def create_model(name: str, **params: Any) -> nn.Module:
    """A model (an untrained ``nn.Module`` unless the factory says otherwise) by name."""
    return _registry.create("model", name, params)


def model_info(name: str) -> dict[str, Any]:
    """Metadata of a model factory and its parameters."""
    return _registry.info("model", name)


def list_datasets(pattern: str = "*", source: str | None = None) -> list[str]:
    """Names of registered datasets."""
    return _registry.select("dataset", pattern, source)


def create_dataset(name: str, **params: Any) -> Any:
    """Load a dataset by name; see :func:`shieldkit.data.load`."""
    return _registry.create("dataset", name, params)


def dataset_info(name: str) -> dict[str, Any]:
    """Metadata of a dataset loader and its parameters."""
    return _registry.info("dataset", name)


def list_plugins() -> list[PluginInfo]:
    """Every plugin seen, loaded or not, with its distribution, version, status and errors."""
    return list(_registry.manager.plugins.values())


def register_plugin(plugin: object, name: str) -> PluginInfo:
    """Register a plugin object in this process (for notebooks and tests; packages use entry points)."""
    return _registry.add_plugin(plugin, name)
