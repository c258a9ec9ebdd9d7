"""``shieldkit list KIND [PATTERN]``: the registered attacks, defences, models or datasets."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import textwrap
from collections.abc import Sequence

from shieldkit.core.errors import EXIT_OK
from shieldkit.plugins import registry

KINDS = {"attacks": "attack", "defenses": "defense", "models": "model", "datasets": "dataset"}
#: ``list`` takes its options anywhere among its positionals (``list attacks --norm l2 'pgd*'``)
INTERMIXED = True
#: What each column of a kind's table means (the capabilities each class declares: core/attack.py, core/defense.py)
LEGENDS = {
    "attack": ("norms: the perturbation norms it supports; bounded: keeps the perturbation inside eps (False: it "
               "seeks a minimal perturbation; given an eps, its result is projected into it); targeted: can aim at "
               "a chosen class (target=), False: untargeted only; access: what it needs of the model: gradient, "
               "score (probabilities only) or decision (labels only)"),
    "defense": ("defense_kind: transform (input preprocessing), postprocess (changes the outputs), detector (flags "
                "inputs) or trainer (makes a robust model); differentiable: autograd through it gives useful "
                "gradients (False: adaptive attacks use BPDA or a surrogate); randomized: two calls on the same "
                "input may differ (adaptive attacks average EOT draws)"),
}
#: the narrowest the summary column gets on a narrow terminal (its lines are then longer than the terminal)
MIN_SUMMARY_WIDTH = 40
#: the width of output that is not a terminal (a pipe, a file), where nothing says how wide it is
FALLBACK_COLUMNS = 120


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``shieldkit list``."""
    parser.add_argument("kind", choices=sorted(KINDS))
    parser.add_argument("pattern", nargs="?", help="shell-style wildcard, e.g. 'pgd*' or '*.art' (default: *, all)")
    parser.add_argument("--source", help="only this source (native, torchattacks, art, a plugin; default: all)")
    parser.add_argument("--norm", help="attacks only: only those supporting this norm (default: any)")
    parser.add_argument("--kind", dest="defense_kind",
                        help="defences only: transform, postprocess, detector or trainer (default: any)")
    parser.add_argument("--json", action="store_true",
                        help="machine-readable output, full summaries (default: a table fitted to the terminal)")


def table(rows: list[dict], columns: Sequence[str], width: int | None = None) -> str:
    """``rows`` as left-aligned text columns under a header line.

    With ``width``, the last column is shortened at a word boundary (ending in "…") so that each
    line fits in ``width`` characters, but keeps at least :data:`MIN_SUMMARY_WIDTH`: one row per
    line, which ``grep`` and ``cut`` read, and never a word cut in two.
    """
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in columns}
    if width is not None and columns:
        last = columns[-1]
        room = max(width - sum(widths[c] + 2 for c in columns[:-1]), MIN_SUMMARY_WIDTH)
        rows = [{**r, last: fit_width(str(r.get(last, "")), room)} for r in rows]
        widths[last] = max([len(last)] + [len(r[last]) for r in rows])
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
    if not rows:
        print(f"no {args.kind} match {pattern!r}")
        return EXIT_OK
    columns_wide = shutil.get_terminal_size((FALLBACK_COLUMNS, 24)).columns
    print(table(rows, columns, width=columns_wide))
    # The legend goes to stderr, under the table on a terminal: stdout stays the table alone for scripts.
    notes = [LEGENDS[kind]] if kind in LEGENDS else []
    notes.append("full descriptions and parameters: shieldkit info NAME")
    for note in notes:
        print(textwrap.fill(note, width=max(columns_wide, MIN_SUMMARY_WIDTH), subsequent_indent="  "), file=sys.stderr)
    return EXIT_OK


def fit_width(text: str, width: int) -> str:
    """``text`` in at most ``width`` characters, shortened at a word boundary with "…" when it is longer."""
    text = " ".join(text.split())
    # break_on_hyphens=False: "per-sample" is one word, not "per-…"
    return text if len(text) <= width else textwrap.shorten(text, width, placeholder="…", break_on_hyphens=False)
