"""The attack suites an evaluation runs when none is named: ``quick``, ``standard`` (the default), ``thorough``.

``standard`` has AutoAttack's strength (Croce & Hein 2020: APGD-CE, APGD-T with the
DLR loss over the top-9 classes, a minimal-norm attack in FAB-T's role, Square with
5000 queries, 100 iterations each), preceded by FGSM and a 10-step PGD: the cascade
gives the expensive attacks only what the cheap ones could not break, which is
what keeps the suite's cost at or below AutoAttack's, with Square's probe
(:data:`SQUARE_PROBE`): it spends its whole budget only where it finds something
the gradient attacks missed. ``quick`` is the suite of
earlier releases (and of the demo); ``thorough`` adds restarts, both APGD losses
and twice Square's queries, the "more iterations and restarts" item of Carlini et
al.'s checklist.

The same presets choose the attack each escalation remedy runs (``REMEDY_ATTACK``).
"""

from __future__ import annotations

from typing import Any

from shieldkit.core.errors import InvalidParameterError

#: Square's probe in ``standard``: its first 1000 of 5000 queries. Square follows the white-box attacks as the
#: black-box check against masked gradients; a search that fools nothing in its first fifth ends there, one
#: that fools a sample gets the whole budget (``shieldkit.attacks.square.Square``). ``thorough`` has no probe.
SQUARE_PROBE = 1000

SUITES: dict[str, tuple[tuple[str, dict[str, Any]], ...]] = {
    "quick": (("noise", {}), ("semantic", {}), ("fgsm", {}), ("pgd", {}), ("deepfool", {})),
    "standard": (("fgsm", {}), ("pgd", {"steps": 10}), ("apgd", {"steps": 100}), ("apgd_t", {"steps": 100}),
                 ("fmn", {"steps": 100}), ("square", {"queries": 5000, "probe": SQUARE_PROBE})),
    "thorough": (("fgsm", {}), ("pgd", {"steps": 10}), ("apgd", {"steps": 100, "restarts": 5}),
                 ("apgd", {"steps": 100, "loss": "dlr", "restarts": 5}), ("apgd_t", {"steps": 100}),
                 ("fmn", {"steps": 300}), ("square", {"queries": 10000})),
}
DEFAULT_SUITE = "standard"

#: The white-box attack each remedy of :mod:`shieldkit.escalation` runs through its view, per suite:
#: APGD (parameter-free step size, so one setting serves every view), with the remedy's loss.
REMEDY_ATTACK: dict[str, tuple[str, dict[str, Any]]] = {
    "quick": ("apgd", {"steps": 20}),
    "standard": ("apgd", {"steps": 100}),
    "thorough": ("apgd", {"steps": 100, "restarts": 3}),
}


def check_suite(name: Any) -> str:
    """``name`` if it is a preset; a one-line error naming ``suite`` otherwise."""
    if not isinstance(name, str) or name not in SUITES:
        raise InvalidParameterError(f"suite must be one of {', '.join(SUITES)}, got {name!r}")
    return name


def suite_attacks(name: str, norm: str) -> list[tuple[str, dict[str, Any]]]:
    """The preset's ``(name, params)`` attacks that support ``norm`` (a preset never fails on the grid's norm)."""
    from shieldkit.plugins.registry import get_registry

    registry = get_registry()
    chosen = []
    for attack, params in SUITES[check_suite(name)]:
        if norm in registry.resolve("attack", attack).obj.norms:
            chosen.append((attack, dict(params)))
    if not chosen:
        raise InvalidParameterError(f"suite {name!r} has no attack for norm {norm}; name attacks with --attacks")
    return chosen
