"""The ``shieldkit`` command.

Exit codes: 0 success, 1 failure while running, 2 bad usage or bad input.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Sequence

from shieldkit import registry
from shieldkit.errors import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    InvalidInputError,
    InvalidParameterError,
    ShieldkitError,
    UnknownNameError,
)

KINDS = {"attacks": "attack", "defenses": "defense", "models": "model", "datasets": "dataset"}

#: Subcommands that live with the code they run: name -> module with add_arguments(parser) and run(args).
EXTERNAL_COMMANDS = {
    "evaluate": ("shieldkit.evaluation.commands", "Evaluate robustness: attack x defence grids and a report"),
    "report": ("shieldkit.evaluation.report_command",
               "Rebuild a run's summary.json, report.md and report.html from its folder (no model needed)"),
    "train-generator": ("shieldkit.gan.commands", "Train a generator (VAE, WGAN-GP, DCGAN) for GAN-inversion"),
    "train": ("shieldkit.train_command", "Fit a trainer defence; data-parallel (DDP) under torchrun"),
}


def _table(rows: list[dict], columns: Sequence[str]) -> str:
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def _cmd_list(args: argparse.Namespace) -> int:
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
    print(_table(rows, columns) if rows else f"no {args.kind} match {pattern!r}")
    return EXIT_OK


#: parameters measured in pixel units, shown as fractions of 255 when they are one
PIXEL_PARAMS = ("eps", "step_size", "eps_step")


def _shown(param: str, value: object) -> str:
    """A default as a reader compares it: pixel budgets as ``8/255 (0.0314)``, the rest as repr."""
    if param in PIXEL_PARAMS and isinstance(value, float) and 0 < value < 1:
        levels = value * 255
        if abs(levels - round(levels)) < 1e-9:
            return f"{round(levels)}/255 ({value:.4f})"
    return repr(value)


def _cmd_info(args: argparse.Namespace) -> int:
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


def _cmd_plugins(args: argparse.Namespace) -> int:
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
    print(_table(rows, ("plugin", "status", "distribution", "registered", "detail")))
    return EXIT_OK


class _CommandParser(argparse.ArgumentParser):
    """A subcommand's parser; with ``intermixed`` set, options may come before, between or after positionals.

    argparse matches consecutive positionals in one go: in ``list attacks --source
    probe 'sign*'`` the optional pattern is consumed (as absent) with ``attacks``,
    and ``'sign*'`` is then left over. Intermixed parsing reads the options first.
    """

    intermixed = False
    _parsing = False

    def parse_known_args(self, args=None, namespace=None):
        if not self.intermixed or self._parsing:
            return super().parse_known_args(args, namespace)
        self._parsing = True  # parse_known_intermixed_args calls parse_known_args itself
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._parsing = False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shieldkit", description="Adversarial attacks and defences for PyTorch image classifiers.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_CommandParser)
    commands.required = True

    listing = commands.add_parser("list", help="List registered attacks, defences, models or datasets")
    listing.add_argument("kind", choices=sorted(KINDS))
    listing.add_argument("pattern", nargs="?", help="shell-style wildcard, e.g. 'pgd*' or '*.art'")
    listing.add_argument("--source", help="only this source (native, torchattacks, art, a plugin)")
    listing.add_argument("--norm", help="attacks only: only those supporting this norm")
    listing.add_argument("--kind", dest="defense_kind", help="defences only: transform, postprocess, detector or trainer")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(handler=_cmd_list)
    listing.intermixed = True

    info = commands.add_parser("info", help="Describe one attack, defence, model or dataset")
    info.add_argument("name")
    info.add_argument("--json", action="store_true")
    info.set_defaults(handler=_cmd_info)
    info.intermixed = True

    plugins = commands.add_parser("plugins", help="List plugins: status, distribution, version, errors")
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(handler=_cmd_plugins)

    for name, (module, help_text) in EXTERNAL_COMMANDS.items():
        sub = commands.add_parser(name, help=help_text)
        sub.set_defaults(handler=_external(module), external_module=module)
        try:
            importlib.import_module(module).add_arguments(sub)
        except ImportError:
            pass  # that part of shieldkit is not there yet; running it says so
    return parser


def _external(module: str):
    def handler(args: argparse.Namespace) -> int:
        finished = False
        try:
            status = importlib.import_module(module).run(args)
            finished = True
            return status
        finally:
            # A command run under torchrun leaves the process group before the interpreter
            # exits: gloo's threads torn down at exit can abort the process (SIGABRT). A rank
            # that failed leaves at once (no barrier), so that torchrun stops the others.
            if "shieldkit.distributed" in sys.modules:
                sys.modules["shieldkit.distributed"].shutdown(wait=finished)

    return handler


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args) or EXIT_OK)
    except (UnknownNameError, InvalidParameterError, InvalidInputError, FileNotFoundError) as error:
        print(f"shieldkit {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ShieldkitError as error:
        print(f"shieldkit {args.command}: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
