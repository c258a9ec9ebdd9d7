"""Progress on long work: tqdm's bars on a terminal, one log line per finished group elsewhere.

In a log (CI, ``nohup``, a pipe) thousands of carriage-return updates would bury
everything else, so where ``sys.stderr`` is not a terminal no bar is drawn and the
``shieldkit.infra.progress`` logger says what finished instead. The training loop and the
evaluation both use it; it imports nothing of shieldkit.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from typing import Any

from tqdm.auto import tqdm

progress_logger = logging.getLogger("shieldkit.infra.progress")


def on_terminal(stream: Any = None) -> bool:
    """Whether ``stream`` (default ``sys.stderr``, where bars draw) is a terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class Progress:
    """A progress bar on a terminal; elsewhere one log line per finished group of units.

    On a terminal it is tqdm's bar, as before. Where ``sys.stderr`` is not a terminal (CI,
    ``nohup``, a pipe) thousands of carriage-return updates would fill the log, so no bar is
    drawn and :meth:`group_done` logs one INFO line on the ``shieldkit.infra.progress`` logger
    (the commands show that logger's lines on stderr: :func:`progress_log`).
    """

    def __init__(self, total: int, desc: str, quiet: bool = False, unit: str = "unit"):
        self.total, self.desc, self.quiet, self.done = total, desc, quiet, 0
        self.bar = None
        if not quiet and on_terminal():
            self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)

    def set_postfix_str(self, text: str, refresh: bool = False) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=refresh)

    def group_done(self, what: str) -> None:
        """One line for a finished group (an epsilon and a sample range, a stage) where no bar draws."""
        if self.bar is None and not self.quiet:
            progress_logger.info("%s: %s done (%d/%d units)", self.desc, what, self.done, self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


@contextlib.contextmanager
def progress_log(quiet: bool) -> Iterator[None]:
    """Show the ``shieldkit.infra.progress`` lines on stderr for the duration (unless ``quiet``, or on a
    terminal, where the bars show progress), whatever the root logger's level."""
    if quiet or on_terminal():
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    previous = (progress_logger.level, progress_logger.propagate)
    progress_logger.addHandler(handler)
    progress_logger.setLevel(logging.INFO)
    progress_logger.propagate = False  # shown once, by this handler
    try:
        yield
    finally:
        progress_logger.removeHandler(handler)
        progress_logger.setLevel(previous[0])
        progress_logger.propagate = previous[1]
