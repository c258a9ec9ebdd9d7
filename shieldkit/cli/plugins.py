"""``shieldkit plugins``: every plugin with its status, distribution, version and errors."""

from __future__ import annotations

import argparse
import json

from shieldkit.cli.listing import table
from shieldkit.core.errors import EXIT_OK
from shieldkit.plugins import registry


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``shieldkit plugins``."""
    parser.add_argument("--json", action="store_true", help="machine-readable output (default: a table)")


def run(args: argparse.Namespace) -> int:
    plugins = registry.list_plugins()
    if args.json:
        print(json.dumps([p.to_dict() for p in plugins], indent=2))
        return EXIT_OK
    rows = [
        {
            "plugin": p.name,
            "status": p.status,
            "distribution": f"{p.distribution or '-'} {p.version or ''}".strip(),
            "registered": len(p.registered),
            "detail": "; ".join(p.errors),
        }
        for p in plugins
    ]
    print(table(rows, ("plugin", "status", "distribution", "registered", "detail")))
    return EXIT_OK

