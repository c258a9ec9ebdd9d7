"""``shieldkit info NAME``: one attack, defence, model or dataset, with its effective defaults."""

from __future__ import annotations

import argparse
import json

from shieldkit.core.errors import EXIT_OK, UnknownNameError
from shieldkit.core.threat import format_eps
from shieldkit.plugins import registry

INTERMIXED = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``shieldkit info``."""
    parser.add_argument("name", help="an attack, defence, model or dataset: a full name (fgsm.art) or a family "
                                     "(fgsm: the preferred source)")
    parser.add_argument("--json", action="store_true", help="machine-readable output (default: text)")


#: parameters measured in pixel units, shown as fractions of 255 when they are one
PIXEL_PARAMS = ("eps", "step_size", "eps_step")


def _shown(param: str, value: object) -> str:
    """A default as a reader compares it: pixel budgets as ``8/255 (0.0314)`` (:func:`format_eps`), the rest as
    repr."""
    if param in PIXEL_PARAMS and isinstance(value, float):
        shown = format_eps(value)
        if "/" in shown:
            return f"{shown} ({value:.4f})"
    return repr(value)


def run(args: argparse.Namespace) -> int:
    errors = []
    for kind in ("attack", "defense", "model", "dataset"):
        try:
            record = registry.get_registry().info(kind, args.name)
        except UnknownNameError as error:
            errors.append(error)
            continue
        if args.json:
            print(json.dumps(record, indent=2))
            return EXIT_OK
        effective, rules = record.pop("effective_params"), record.pop("param_rules")
        for key, value in record.items():
            if key != "params":
                print(f"{key}: {value}")
                continue
            print("params (effective defaults):")
            for param in value:
                rule = rules.get(param)
                print(f"  {param} = {_shown(param, effective.get(param))}" + (f"  ({rule})" if rule else ""))
        return EXIT_OK
    raise errors[0]

