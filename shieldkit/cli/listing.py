"""``shieldkit list KIND [PATTERN]``: the registered attacks, defences, models or datasets."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from shieldkit.core.errors import EXIT_OK
from shieldkit.plugins import registry

KINDS = {"attacks": "attack", "defenses": "defense", "models": "model", "datasets": "dataset"}
#: ``list`` takes its options anywhere among its positionals (``list attacks --norm l2 'pgd*'``)
INTERMIXED = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=sorted(KINDS))
    parser.add_argument("pattern", nargs="?", help="shell-style wildcard, e.g. 'pgd*' or '*.art'")
    parser.add_argument("--source", help="only this source (native, torchattacks, art, a plugin)")
    parser.add_argument("--norm", help="attacks only: only those supporting this norm")
    parser.add_argument("--kind", dest="defense_kind", help="defences only: transform, postprocess, detector or trainer")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def table(rows: list[dict], columns: Sequence[str]) -> str:
    """``rows`` as left-aligned text columns under a header line."""
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def run(args: argparse.Namespace) -> int:
    kind = KINDS[args.kind]
    pattern = args.pattern or "*"
    if kind == "attack":
        names = registry.list_attacks(pattern, source=args.source, norm=args.norm)
    elif kind == "defense":
        names = registry.list_defenses(pattern, source=args.source, kind=args.defense_kind)
    elif kind == "model":
        names = registry.list_models(pattern, source=args.source)
    else:
        names = registry.list_datasets(pattern, source=args.source)
    records = [registry.get_registry().info(kind, name) for name in names]
    if args.json:
        print(json.dumps(records, indent=2))
        return EXIT_OK
    columns = {
        "attack": ("name", "norms", "bounded", "targeted", "access", "summary"),
        "defense": ("name", "defense_kind", "differentiable", "randomized", "summary"),
    }.get(kind, ("name", "summary"))
    rows = [{**r, "norms": ",".join(r.get("norms", []))} for r in records]
    for row in rows:
        row["summary"] = row["summary"][:70]
    print(table(rows, columns) if rows else f"no {args.kind} match {pattern!r}")
    return EXIT_OK

