"""The ``shieldkit`` command line: :func:`main` (``shieldkit/cli/main.py``) and one module per subcommand,
each with ``add_arguments(parser)`` and ``run(args)`` (the table ``COMMANDS`` in ``main.py`` names them)."""

from shieldkit.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
