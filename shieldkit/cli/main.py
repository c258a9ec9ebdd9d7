"""The ``shieldkit`` command.

Exit codes: 0 success, 1 failure while running, 2 bad usage or bad input.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from shieldkit.core.errors import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    InvalidInputError,
    InvalidParameterError,
    ShieldkitError,
    UnknownNameError,
    one_line,
)

#: Every subcommand: name -> (module of shieldkit.cli with ``add_arguments(parser)`` and ``run(args)``, help).
#: A module's ``INTERMIXED = True`` lets its options sit anywhere among its positionals.
COMMANDS = {
    "list": ("shieldkit.cli.listing", "List registered attacks, defences, models or datasets"),
    "info": ("shieldkit.cli.info", "Describe one attack, defence, model or dataset"),
    "plugins": ("shieldkit.cli.plugins", "List plugins: status, distribution, version, errors"),
    "evaluate": ("shieldkit.cli.evaluate", "Evaluate robustness: attack x defence grids and a report"),
    "report": ("shieldkit.cli.report",
               "Rebuild a run's summary.json, report.md and report.html from its folder (no model needed)"),
    "compare": ("shieldkit.cli.compare", "Compare finished runs: a leaderboard of clean and robust accuracy"),
    "train-generator": ("shieldkit.cli.train_generator", "Train a generator (VAE, WGAN-GP, DCGAN) for GAN-inversion"),
    "train": ("shieldkit.cli.train", "Fit a trainer defence; data-parallel (DDP) under torchrun"),
}


class _OneLineParser(argparse.ArgumentParser):
    """A parser whose refusals take one line of stderr, as every other refusal of the command does: the
    error and where to read the usage (argparse prints the whole usage first, a dozen lines for evaluate)."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)} (usage: {self.prog} --help)\n")


class _CommandParser(_OneLineParser):
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


class _Version(argparse.Action):
    """``--version``: shieldkit's version and torch's (the one a bug report needs next to it), then exit 0.

    torch's version is read when asked for, not when the parser is built, so that every other command
    pays nothing for it.
    """

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())  # on stdout, as argparse's own version action prints
        parser.exit()


def version_text() -> str:
    """``shieldkit 0.1.0 (torch 2.13.0, Python 3.12.3)``: what ``shieldkit --version`` prints."""
    import platform

    import torch

    from shieldkit.version import __version__

    return f"shieldkit {__version__} (torch {torch.__version__}, Python {platform.python_version()})"


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="shieldkit", description="Adversarial attacks and defences for PyTorch image classifiers.")
    parser.add_argument("-V", "--version", action=_Version, help="print shieldkit's and torch's versions and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages (default: warnings only)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_CommandParser)
    commands.required = True

    for name, (module, help_text) in COMMANDS.items():
        command = importlib.import_module(module)
        sub = commands.add_parser(name, help=help_text)
        sub.set_defaults(handler=_handler(command))
        sub.intermixed = getattr(command, "INTERMIXED", False)
        command.add_arguments(sub)
    return parser


def _handler(command):
    def handler(args: argparse.Namespace) -> int:
        finished = False
        try:
            status = command.run(args)
            finished = True
            return status
        finally:
            # A command run under torchrun leaves the process group before the interpreter
            # exits: gloo's threads torn down at exit can abort the process (SIGABRT). A rank
            # that failed leaves at once (no barrier), so that torchrun stops the others.
            if "shieldkit.infra.distributed" in sys.modules:
                sys.modules["shieldkit.infra.distributed"].shutdown(wait=finished)

    return handler


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args) or EXIT_OK)
    except (UnknownNameError, InvalidParameterError, InvalidInputError, FileNotFoundError) as error:
        print(f"shieldkit {args.command}: error: {one_line(error)}", file=sys.stderr)
        return EXIT_USAGE
    except ShieldkitError as error:
        print(f"shieldkit {args.command}: error: {one_line(error)}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


