"""Plugin discovery and loading.

Built-in plugins (native, torchattacks, art) and third-party ones are all found
by entry point in the group ``shieldkit`` (the built-ins are declared in
shieldkit's own ``pyproject.toml``) and register through the same hooks
(:mod:`shieldkit.plugins.hookspecs`). The plugin manager names no module it loads, so
nothing it loads imports it back. Loading is lazy (on first registry use) and a
broken plugin never takes the registry down: it is recorded as failed, with its
distribution, version and error, and everything else keeps working.

Environment variables:
    SHIELDKIT_PLUGINS: comma-separated allow list of third-party plugins to load.
    SHIELDKIT_BLOCK_PLUGINS: comma-separated plugins (built-in or not) not to load.
    SHIELDKIT_NO_PLUGINS=1: load no third-party plugins.
    SHIELDKIT_STRICT_PLUGINS=1: raise :class:`PluginError` instead of recording failures.
    SHIELDKIT_TRACE_PLUGINS=1: log every load and hook call to stderr.
"""

from __future__ import annotations

import copy
import importlib
import importlib.metadata
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import pluggy

from shieldkit.core.errors import MissingDependencyError, PluginError
from shieldkit.plugins import hookspecs
from shieldkit.plugins.hookspecs import PROJECT

# hookimpl lives in hookspecs (which imports nothing of shieldkit); still importable from here.
from shieldkit.plugins.hookspecs import hookimpl as hookimpl

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = PROJECT

#: Built-in plugins, loaded first and in this order: the entry points of shieldkit's own distribution.
BUILTIN_PLUGINS = ("native", "torchattacks", "art")

HOOKS = ("register_attacks", "register_defenses", "register_models", "register_datasets")
#: Hooks that tell plugins something happened (:meth:`PluginManager.notify`), rather than ask them to register.
EVENTS = ("shieldkit_run_finished",)


@dataclass
class PluginInfo:
    """What is known about one plugin: where it comes from and how loading it went.

    ``status`` is ``ok``, ``failed`` (import error, hook raised, invalid
    registration), ``missing`` (a library it needs is not installed) or
    ``blocked`` (by an environment variable).
    """

    name: str
    module: str
    builtin: bool
    distribution: str | None = None
    version: str | None = None
    status: str = "ok"
    errors: list[str] = field(default_factory=list)
    registered: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _env_list(variable: str) -> set[str] | None:
    value = os.environ.get(variable)
    if value is None:
        return None
    return {item.strip() for item in value.split(",") if item.strip()}


def _env_flag(variable: str) -> bool:
    return os.environ.get(variable, "").strip().lower() not in ("", "0", "false", "no")


class PluginManager:
    """Loads plugins and calls their hooks, one plugin at a time, recording failures."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.strict = _env_flag("SHIELDKIT_STRICT_PLUGINS")
        _trace_to_stderr(_env_flag("SHIELDKIT_TRACE_PLUGINS"))
        if _env_flag("SHIELDKIT_TRACE_PLUGINS"):
            self.pm.trace.root.setwriter(lambda message: logger.debug("%s", message.rstrip()))
            self.pm.enable_tracing()

    # ----------------------------------------------------------------- loading

    def load_all(self) -> None:
        """Load the built-in plugins, then the installed ones (per the allow/block lists)."""
        blocked = _env_list("SHIELDKIT_BLOCK_PLUGINS") or set()
        entry_points = _entry_points()
        builtins = {ep.name: ep for ep in entry_points if _distribution(ep) == PROJECT and ep.name in BUILTIN_PLUGINS}
        missing = [name for name in BUILTIN_PLUGINS if name not in builtins]
        if missing:
            raise PluginError(
                f"shieldkit's built-in plugins ({', '.join(missing)}) are not declared: shieldkit is not installed "
                "in this environment (pip install shieldkit, or pip install -e . in a checkout)"
            )
        for name in BUILTIN_PLUGINS:
            info = PluginInfo(name=name, module=builtins[name].value, builtin=True, distribution=PROJECT,
                              version=_version(PROJECT))
            if name in blocked:
                self._skip(info, "blocked by SHIELDKIT_BLOCK_PLUGINS")
                continue
            self._load(info, builtins[name].load)
        if _env_flag("SHIELDKIT_NO_PLUGINS"):
            logger.debug("SHIELDKIT_NO_PLUGINS is set: no third-party plugins loaded")
            return
        allowed = _env_list("SHIELDKIT_PLUGINS")
        for entry_point in entry_points:
            if entry_point.name in builtins and builtins[entry_point.name] is entry_point:
                continue
            dist = getattr(entry_point, "dist", None)
            info = PluginInfo(
                name=entry_point.name,
                module=entry_point.value,
                builtin=False,
                distribution=_distribution(entry_point),
                version=dist.version if dist is not None else None,
            )
            if entry_point.name in self.plugins:
                first = self.plugins[entry_point.name]
                self._fail(info, f"plugin name {entry_point.name!r} is already taken by {first.distribution or first.module}")
                self.plugins.setdefault(f"{entry_point.name} ({info.distribution})", info)
                continue
            if entry_point.name in blocked:
                self._skip(info, "blocked by SHIELDKIT_BLOCK_PLUGINS")
            elif allowed is not None and entry_point.name not in allowed:
                self._skip(info, "not in SHIELDKIT_PLUGINS")
            else:
                self._load(info, entry_point.load)

    def register(self, plugin: object, name: str, *, distribution: str | None = None, version: str | None = None) -> PluginInfo:
        """Register an already imported plugin object (a module or any object with hook implementations)."""
        info = PluginInfo(name=name, module=getattr(plugin, "__name__", repr(plugin)), builtin=False,
                          distribution=distribution, version=version)
        if name in self.plugins:
            self._fail(info, f"plugin name {name!r} is already taken")
            return info
        self._load(info, lambda: plugin)
        return info

    def _load(self, info: PluginInfo, importer: Callable[[], object]) -> None:
        self.plugins[info.name] = info
        started = time.perf_counter()
        try:
            plugin = importer()
            self.pm.register(plugin, name=info.name)
        except MissingDependencyError as error:
            self._missing(info, str(error))
        except Exception as error:  # a broken plugin must not break the registry
            self._fail(info, f"failed to load: {type(error).__name__}: {error}")
        else:
            logger.debug("loaded plugin %s from %s in %.1f ms", info.name, info.module, 1e3 * (time.perf_counter() - started))

    def _skip(self, info: PluginInfo, reason: str) -> None:
        self.plugins[info.name] = info
        info.status = "blocked"
        info.errors.append(reason)
        logger.debug("plugin %s: %s", info.name, reason)

    def _missing(self, info: PluginInfo, reason: str) -> None:
        info.status = "missing"
        if reason not in info.errors:  # a library's every hook reports the same missing import
            info.errors.append(reason)
        logger.debug("plugin %s: %s", info.name, reason)

    def _fail(self, info: PluginInfo, reason: str) -> None:
        """Record a failure of ``info``'s plugin (or raise it in strict mode)."""
        info.status = "failed"
        info.errors.append(reason)
        where = f"{info.distribution} {info.version}" if info.distribution else info.module
        message = f"plugin {info.name!r} ({where}): {reason}"
        if self.strict:
            raise PluginError(message + " [SHIELDKIT_STRICT_PLUGINS=1]")
        logger.warning("%s", message)

    # ------------------------------------------------------------------ hooks

    def call_hook(self, hook: str, make_register: Callable[[PluginInfo], Callable], only: str | None = None) -> None:
        """Call ``hook`` on each plugin separately, so that an error is charged to the plugin that raised it.

        Args:
            hook: the hook's name in :mod:`shieldkit.plugins.hookspecs`.
            make_register: builds the ``register`` callback for one plugin.
            only: call just this plugin's implementation.
        """
        for impl in getattr(self.pm.hook, hook).get_hookimpls():  # in registration order: built-ins first
            if only is not None and impl.plugin_name != only:
                continue
            info = self.plugins[impl.plugin_name]
            started = time.perf_counter()
            arguments = {"register": make_register(info)}
            try:
                impl.function(**{name: arguments[name] for name in impl.argnames})
            except (PluginError, MissingDependencyError) as error:
                if isinstance(error, MissingDependencyError) and info.status != "failed":
                    self._missing(info, str(error))
                elif self.strict:
                    raise
                else:
                    self._fail(info, str(error))
            except Exception as error:
                self._fail(info, f"hook {hook} raised {type(error).__name__}: {error}")
            logger.debug("plugin %s: %s took %.1f ms", info.name, hook, 1e3 * (time.perf_counter() - started))

    def notify(self, hook: str, **arguments) -> None:
        """Call the event ``hook`` (one of :data:`EVENTS`) on each plugin separately with ``arguments`` (each
        implementation gets the ones it names, a deep copy of its own); an error is charged to the plugin
        that raised it, as in :meth:`call_hook`, and never reaches the caller outside strict mode."""
        for impl in getattr(self.pm.hook, hook).get_hookimpls():
            info = self.plugins[impl.plugin_name]
            started = time.perf_counter()
            try:
                impl.function(**{name: copy.deepcopy(arguments[name]) for name in impl.argnames})
            except Exception as error:
                self._fail(info, f"hook {hook} raised {type(error).__name__}: {error}")
            logger.debug("plugin %s: %s took %.1f ms", info.name, hook, 1e3 * (time.perf_counter() - started))


class _TraceHandler(logging.StreamHandler):
    """Writes trace lines to whatever ``sys.stderr`` is at the time (as logging's last resort does)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _trace_to_stderr(enabled: bool) -> None:
    """Turn the plugin trace on stderr on or off for the process.

    One handler, however many managers a process makes (a reset registry makes a
    new one), and no propagation while it is on: a handler on the root logger (the
    CLI's ``logging.basicConfig``) would print every line a second time.
    """
    handlers = [h for h in logger.handlers if isinstance(h, _TraceHandler)]
    if enabled:
        if not handlers:
            handler = _TraceHandler()
            handler.setFormatter(logging.Formatter("shieldkit.plugins.manager: %(message)s"))
            logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
    elif handlers:
        for handler in handlers:
            logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
        logger.propagate = True


def _entry_points() -> list:
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def _distribution(entry_point) -> str | None:
    dist = getattr(entry_point, "dist", None)
    return dist.metadata["Name"] if dist is not None else None


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
