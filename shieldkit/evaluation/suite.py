"""The attack suite and the defences of a grid, resolved through the registry and checked before any compute.

Resolution happens once: :func:`resolve_suite` turns names, specs and objects into
typed :class:`AttackEntry` / :class:`DefenseEntry` records (building each once to
check its parameters), and the runner receives the :class:`Suite` as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from shieldkit.core.attack import Attack
from shieldkit.core.component import component_params
from shieldkit.core.defense import Defense
from shieldkit.core.errors import InvalidParameterError
from shieldkit.core.threat import DEFAULT_EPS
from shieldkit.evaluation.config import ComponentSpec, EvalConfig, parse_spec
from shieldkit.evaluation.presets import suite_attacks
from shieldkit.plugins.registry import get_registry

_COMMON = ("eps", "norm", "bounds", "seed")
NO_DEFENSE = ("none", "no_defense", "undefended")


@dataclass
class AttackEntry:
    """One attack of the suite, buildable for any epsilon and seed.

    Attributes:
        label: its name in tables (unique within the suite).
        name: the registered ``family.source`` name.
        cls: the attack class.
        params: its own constructor parameters (the grid sets ``eps``, ``norm``, ``bounds``, ``seed``).
    """

    label: str
    name: str
    cls: type[Attack]
    params: dict[str, Any]
    source: str = ""

    @property
    def access(self) -> str:
        return self.cls.access

    @property
    def white_box(self) -> bool:
        return self.cls.access == "gradient"

    def build(self, eps: float, norm: str, bounds: tuple[float, float], seed: int,
              batch_rows: int | None = None) -> Attack:
        """A fresh instance for one unit of work: the attack ``create_attack(name, **params)`` builds.

        The grid sets only ``eps``, ``norm``, ``bounds`` and ``seed``; every other
        default (step sizes included) is the attack's own, stated where it is defined.
        ``batch_rows`` (the rows the device takes at once; the runner gives its chunk
        size on a GPU) goes to an attack that takes a ``batch_rows`` parameter and was
        not given one (APGD-T: several targets in one batch).
        """
        params = {**self.params, "eps": eps, "norm": norm, "bounds": tuple(bounds), "seed": int(seed)}
        if batch_rows is not None and "batch_rows" not in params and "batch_rows" in component_params(self.cls):
            params["batch_rows"] = batch_rows
        return self.cls.create(self.source, **params)


@dataclass
class DefenseEntry:
    """One defence of the grid (``cls`` is ``None`` for no defence)."""

    label: str
    name: str
    cls: type[Defense] | None
    params: dict[str, Any] = field(default_factory=dict)
    fit: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    instance: Defense | None = None

    @property
    def kind(self) -> str:
        return "none" if self.cls is None else self.cls.kind

    def build(self, seed: int) -> Defense | None:
        if self.instance is not None:
            return self.instance
        if self.cls is None:
            return None
        params = dict(self.params)
        params.setdefault("seed", int(seed))
        return self.cls.create(self.source, **params)


def resolve_attacks(entries: list[Any], norm: str, eps: list[float] | None,
                    bounds: tuple[float, float]) -> list[AttackEntry]:
    """Attack entries for names, specs or ``Attack`` instances; every one built once to check its parameters
    (at the grid's largest eps; with no grid yet, ``eps=None``, at the norm's ``DEFAULT_EPS``).

    Raises:
        UnknownNameError: an attack is not registered (the message suggests close names).
        InvalidParameterError: unknown parameters, a bad value, or an attack that
            does not support the grid's ``norm``.
    """
    if not entries:
        raise InvalidParameterError("attacks: give at least one attack")
    registry = get_registry()
    probe = max(eps) if eps else DEFAULT_EPS[norm]  # no grid yet: it follows the data (config.default_eps)
    resolved: list[AttackEntry] = []
    for item in entries:
        if isinstance(item, Attack):
            params = {k: v for k, v in item.get_params().items() if k not in _COMMON}
            entry = AttackEntry(item.name, item.name, type(item), params, item.source)
        else:
            spec = parse_spec(item, "attacks")
            found = registry.resolve("attack", spec.name)
            entry = AttackEntry(spec.label or spec.name, found.name, found.obj, dict(spec.params), found.source)
            unknown = sorted(set(spec.params) - set(component_params(found.obj)))
            common = sorted(set(spec.params) & set(_COMMON))
            if common:
                raise InvalidParameterError(
                    f"attacks: {found.name}: {', '.join(common)} {'is' if len(common) == 1 else 'are'} set by the "
                    "grid (--eps, --norm), not per attack"
                )
            if unknown:
                raise InvalidParameterError(
                    f"attacks: {found.name}: unknown parameter{'s' if len(unknown) > 1 else ''} "
                    f"{', '.join(map(repr, unknown))}; valid: {', '.join(p for p in component_params(found.obj) if p not in _COMMON)}"
                )
        if norm not in entry.cls.norms:
            raise InvalidParameterError(
                f"attacks: {entry.name} supports only {', '.join(entry.cls.norms)} but the grid's norm is {norm}; "
                f"drop it or evaluate with --norm {entry.cls.norms[0]}"
            )
        entry.build(probe, norm, bounds, 0)  # raises on bad parameter values, before any compute
        resolved.append(entry)
    _make_unique([e for e in resolved])
    return resolved


def resolve_defenses(entries: list[Any], seed: int) -> list[DefenseEntry]:
    """Defence entries for names, specs or ``Defense`` instances (``"none"`` means no defence)."""
    if not entries:
        raise InvalidParameterError("defenses: give at least one defence (or 'none')")
    registry = get_registry()
    resolved: list[DefenseEntry] = []
    for item in entries:
        if item is None:
            item = "none"
        if isinstance(item, Defense):
            resolved.append(DefenseEntry(item.name, item.name, type(item), item.get_params(), {}, item.source, item))
            continue
        spec: ComponentSpec = parse_spec(item, "defenses")
        if spec.name.strip().lower() in NO_DEFENSE:
            if spec.params:
                raise InvalidParameterError(f"defenses: 'none' takes no parameters, got {spec.params}")
            resolved.append(DefenseEntry(spec.label or "none", "none", None))
            continue
        found = registry.resolve("defense", spec.name)
        entry = DefenseEntry(spec.label or spec.name, found.name, found.obj, dict(spec.params), dict(spec.fit), found.source)
        valid = [p for p in component_params(found.obj) if p not in ("bounds", "seed")]
        unknown = sorted(set(spec.params) - set(valid) - {"bounds", "seed"})
        if unknown:
            raise InvalidParameterError(
                f"defenses: {found.name}: unknown parameter{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(map(repr, unknown))}; valid: {', '.join(valid) or '(none)'}"
            )
        entry.build(seed)  # raises on unknown or bad parameters, before any compute
        if spec.fit and entry.kind not in ("trainer", "detector"):
            raise InvalidParameterError(f"defenses: {found.name} is a {entry.kind} defence; 'fit' options apply to trainers and detectors only")
        allowed = fit_options(found.obj) if entry.kind == "trainer" else {"fpr"}
        unknown = sorted(set(spec.fit) - allowed) if allowed else []
        if unknown:
            raise InvalidParameterError(
                f"defenses: {found.name}: unknown fit option{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(map(repr, unknown))}; valid: {', '.join(sorted(allowed))}"
            )
        resolved.append(entry)
    _make_unique(resolved)
    return resolved


def fit_options(defense: Any) -> set[str]:
    """The ``fit`` options a trainer declares (:attr:`~shieldkit.TrainerDefense.fit_options`); empty for others."""
    return set(getattr(defense, "fit_options", ()) or ())


def _make_unique(entries: list[Any]) -> None:
    seen: dict[str, int] = {}
    for entry in entries:
        count = seen.get(entry.label, 0)
        seen[entry.label] = count + 1
        if count:
            entry.label = f"{entry.label}#{count + 1}"


def order_suite(attacks: list[AttackEntry]) -> tuple[list[AttackEntry], list[AttackEntry]]:
    """White-box (gradient) attacks first, then black-box ones, each in the order given.

    Black-box attacks run on what the white-box ones left robust, so that what
    they still find is exactly the "black-box beats white-box" masking signal.
    """
    return [a for a in attacks if a.white_box], [a for a in attacks if not a.white_box]


def strongest_white_box(attacks: list[AttackEntry]) -> AttackEntry | None:
    """The attack the large-epsilon check uses: PGD-like (iterative) first, else any gradient attack."""
    white = [a for a in attacks if a.white_box]
    for family in ("pgd", "apgd", "bim", "mifgsm"):
        for entry in white:
            if entry.cls.family == family:
                return entry
    iterative = [a for a in white if "steps" in component_params(a.cls) and a.cls.bounded]
    return (iterative or white or [None])[0]


def effort_attack(attacks: list[AttackEntry]) -> AttackEntry | None:
    """The attack the "more effort" check repeats: the suite's last untargeted APGD, else its last
    iterative (``steps``) gradient attack with a bounded budget, else none."""
    iterative = [a for a in attacks if a.white_box and a.cls.bounded and "steps" in component_params(a.cls)]
    apgd = [a for a in iterative if a.cls.family == "apgd"]
    return (apgd or iterative or [None])[-1]


def spec_records(attacks: list[AttackEntry], defenses: list[DefenseEntry]) -> tuple[list[dict], list[dict]]:
    """What config.json records of the suite."""
    return (
        [{"label": a.label, "name": a.name, "params": a.params} for a in attacks],
        [{"label": d.label, "name": d.name, "params": d.params, "fit": d.fit} for d in defenses],
    )


@dataclass
class Suite:
    """The resolved attacks and defences of a grid: what the runner receives and never re-reads."""

    attacks: list[AttackEntry]
    defenses: list[DefenseEntry]

    @property
    def white_box(self) -> list[AttackEntry]:
        return order_suite(self.attacks)[0]

    @property
    def black_box(self) -> list[AttackEntry]:
        return order_suite(self.attacks)[1]


def resolve_suite(attacks: list[Any], defenses: list[Any], config: EvalConfig) -> Suite:
    """Every attack and defence of a run resolved and checked against the grid (``config``'s norm, eps, seed).

    No attacks (``[]`` or ``None``) means the preset ``config.suite`` for the grid's norm.
    """
    attacks = list(attacks or suite_attacks(config.suite, config.norm))
    return Suite(resolve_attacks(attacks, config.norm, config.eps, config.bounds),
                 resolve_defenses(defenses, config.seed))


@dataclass
class Setup:
    """What a command-line run needs, obtained from its configuration (the CLI and the demo build it)."""

    config: EvalConfig
    model: nn.Module
    data: Any
    train_data: Any
    suite: Suite
