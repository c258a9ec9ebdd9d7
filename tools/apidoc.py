"""The generated API reference (docs/api.md): every public name with its signature and summary, readable in the
repository, followed by the mkdocstrings directives that render the full docstrings on the site.

Regenerate with::

    python tools/apidoc.py > docs/api.md

``tests/unit/test_apidoc.py`` fails when the committed page differs from what this module writes, so a renamed
function or a changed signature or summary cannot leave the page behind.
"""

from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Section:
    """One section of the page.

    Attributes:
        title: the heading.
        intro: a paragraph of prose before the list.
        names: dotted names of the documented objects (``module.name``, ``module.Class``).
        directives: the mkdocstrings blocks that follow the list (the site's full reference).
    """

    title: str
    intro: str
    names: tuple[str, ...]
    directives: str


_REGISTRY = ("list_attacks", "create_attack", "attack_info", "list_defenses", "create_defense", "defense_info",
             "list_models", "create_model", "model_info", "list_datasets", "create_dataset", "dataset_info",
             "list_plugins", "register_plugin")
_DEFENSES = ("Defense", "TransformDefense", "PostprocessDefense", "DetectorDefense", "TrainerDefense",
             "DefendedModel", "AttackView")
_KIT = ("check_attack", "check_defense", "ConformanceError", "tiny_model", "tiny_batch")


def _members(module: str, names: tuple[str, ...]) -> str:
    listed = "".join(f"\n        - {name}" for name in names)
    return f"::: {module}\n    options:\n      members:{listed}"


SECTIONS = (
    Section(
        "Registry",
        "Every component is reached by name (`family.source`; a bare family resolves native > torchattacks > "
        "art > other plugins). Patterns are shell wildcards matched against the name and the family.",
        tuple(f"shieldkit.plugins.registry.{name}" for name in _REGISTRY),
        _members("shieldkit.plugins.registry", _REGISTRY),
    ),
    Section(
        "Attacks",
        "An attack is an `Attack` subclass: the base class validates, places, guards, seeds, counts and checks "
        "the output; `run` reports an `AttackResult`. `ThreatModel` is the budget both use.",
        ("shieldkit.core.attack.Attack", "shieldkit.core.attack.AttackResult", "shieldkit.core.threat.ThreatModel"),
        "::: shieldkit.core.attack.Attack\n\n::: shieldkit.core.attack.AttackResult\n\n::: shieldkit.core.threat.ThreatModel",
    ),
    Section(
        "Defences",
        "Four kinds, one base class each; `wrap(model)` gives the deployed `DefendedModel`, whose `attack_view` "
        "is what adaptive attacks differentiate. `Normalize` puts normalisation inside the model.",
        tuple(f"shieldkit.core.defense.{name}" for name in _DEFENSES) + ("shieldkit.core.layers.Normalize",),
        _members("shieldkit.core.defense", _DEFENSES) + "\n\n::: shieldkit.core.layers.Normalize",
    ),
    Section(
        "Components",
        "What attacks and defences share: identity, parameters and their effective defaults.",
        ("shieldkit.core.component.Component", "shieldkit.core.component.ParamDefault"),
        "::: shieldkit.core.component.Component\n\n::: shieldkit.core.component.ParamDefault",
    ),
    Section(
        "Conformance kit",
        "For plugin authors and shieldkit's own suite: each failure is a `ConformanceError` naming its clause "
        "(`ATTACK_CLAUSES`, `DEFENSE_CLAUSES`; see the plugin guide).",
        tuple(f"shieldkit.testing.{name}" for name in _KIT),
        _members("shieldkit.testing", _KIT),
    ),
    Section(
        "Plugins",
        "What `list_plugins()` and `shieldkit plugins` report for each plugin.",
        ("shieldkit.plugins.manager.PluginInfo",),
        "::: shieldkit.plugins.manager.PluginInfo",
    ),
    Section(
        "Errors",
        "Every error subclasses a built-in (`InvalidParameterError` both `TypeError` and `ValueError`), and "
        "every message names the component, parameter or argument at fault.",
        tuple(f"shieldkit.core.errors.{name}" for name in (
            "ShieldkitError", "InvalidInputError", "InvalidModelError", "InvalidParameterError", "UnknownNameError",
            "MissingDependencyError", "AttackContractError", "PluginError", "DatasetNotFoundError")),
        "::: shieldkit.core.errors",
    ),
)


def _resolve(dotted: str) -> object:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _summary(obj: object, inherited: bool = True) -> str:
    """The docstring's first paragraph on one line, with reST roles and double backticks as Markdown code.

    ``inherited=False`` reads only the object's own docstring (a ``forward`` does not get
    ``nn.Module.forward``'s words).
    """
    doc = (inspect.getdoc(obj) if inherited else inspect.cleandoc(getattr(obj, "__doc__", None) or "")) or ""
    paragraph = doc.split("\n\n", 1)[0]
    text = " ".join(paragraph.split()).replace("``", "`")
    return re.sub(r":(?:func|class|meth|attr|mod|data):`~?([^`]+)`", r"`\1`", text)


def _signature(name: str, obj: object) -> str:
    """``name(params)`` with defaults and without annotations (they make lines long and tables ambiguous)."""
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return name
    parameters = [p.replace(annotation=inspect.Parameter.empty) for p in signature.parameters.values()
                  if p.name not in ("self", "cls")]
    plain = signature.replace(parameters=parameters, return_annotation=inspect.Signature.empty)
    return f"{name}{plain}"


def _public_members(cls: type) -> list[tuple[str, object]]:
    """Methods and properties a class defines itself (not inherited), public ones and ``__call__``, in source order."""
    found = []
    for name, value in vars(cls).items():
        if (name.startswith("_") and name != "__call__") or name in ("forward", "extra_repr"):
            continue  # forward and extra_repr are nn.Module's protocol, documented by the class
        if isinstance(value, (classmethod, staticmethod)):
            value = value.__func__
        if isinstance(value, property) or inspect.isfunction(value):
            found.append((name, value))
    return found


def _entry(dotted: str) -> list[str]:
    obj = _resolve(dotted)
    name = dotted.rpartition(".")[2]
    if inspect.isclass(obj):
        lines = [f"- **`{name}`** (`{dotted}`): {_summary(obj)}"]
        if not issubclass(obj, BaseException):
            for member, value in _public_members(obj):
                shown = member if isinstance(value, property) else _signature(member, value)
                summary = _summary(value, inherited=False)
                lines.append(f"    - `{shown}`" + (f": {summary}" if summary else ""))
        return lines
    return [f"- **`{_signature(name, obj)}`**: {_summary(obj)}"]


def render() -> str:
    """The whole page."""
    lines = [
        "# API reference",
        "",
        "<!-- Generated by `python tools/apidoc.py > docs/api.md`; tests/unit/test_apidoc.py checks it is fresh. -->",
        "",
        "`import shieldkit as sk` gives the names most code needs (`sk.create_attack`, `sk.Attack`, "
        "`sk.TransformDefense`, ...); the lists below say where each lives. Each section lists the public "
        "names with their signatures and summaries, then (on the documentation site) the full docstrings.",
    ]
    for section in SECTIONS:
        lines += ["", f"## {section.title}", "", section.intro, ""]
        for dotted in section.names:
            lines += _entry(dotted)
        lines += ["", section.directives]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
