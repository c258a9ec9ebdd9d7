"""Progress on long work: tqdm's bars on a terminal, one log line per finished group elsewhere.

In a log (CI, ``nohup``, a pipe) thousands of carriage-return updates would bury
everything else, so where ``sys.stderr`` is not a terminal no bar is drawn and the
``shieldkit.infra.progress`` logger says what finished instead, with an estimate of the
time left. This is the one place bars are made: the evaluation (:class:`Progress`) and
every training loop (:func:`progress_bar` and :func:`progress_line`) go through it. It
imports nothing of shieldkit.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterable, Iterator
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


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s`` or ``1h02m``: a duration as a person reads it in a log line."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def time_left(elapsed: float, done: float, total: float) -> str | None:
    """``~3m05s left``, extrapolated from the rate so far; ``None`` before any work or after the last."""
    if done <= 0 or done >= total:
        return None
    return f"~{format_duration(elapsed / done * (total - done))} left"


def progress_bar(iterable: Iterable | None = None, *, total: float | None = None, desc: str | None = None,
                 quiet: bool = False, initial: float = 0, unit: str = "it", leave: bool = False) -> tqdm:
    """tqdm's bar over ``iterable``, drawn only on a terminal and unless ``quiet``.

    Elsewhere the bar is disabled: it still iterates and takes ``set_postfix``, but writes
    nothing, so a log never fills with carriage-return updates; say what finished with
    :func:`progress_line` instead.
    """
    return tqdm(iterable, total=total, desc=desc, initial=initial, unit=unit, leave=leave,
                disable=quiet or not on_terminal())


def progress_line(logger: logging.Logger, quiet: bool, message: str, *args: Any) -> None:
    """A line of progress (an epoch, a group of steps) at INFO: in a bar's place where no bar draws.

    Where :func:`progress_bar` draws nothing (not a terminal, not ``quiet``) the line goes to the
    ``shieldkit.infra.progress`` logger, which the commands show on stderr (:func:`progress_log`);
    otherwise to ``logger``, where ``-v`` shows it, since the bar already says as much.
    """
    if not quiet and not on_terminal():
        progress_logger.info(message, *args)
    else:
        logger.info(message, *args)


class Progress:
    """A progress bar on a terminal; elsewhere one log line per finished group of units.

    On a terminal it is tqdm's bar, which shows the elapsed and the remaining time. Where
    ``sys.stderr`` is not a terminal (CI, ``nohup``, a pipe) thousands of carriage-return updates
    would fill the log, so no bar is drawn and :meth:`group_done` logs one INFO line on the
    ``shieldkit.infra.progress`` logger (the commands show that logger's lines on stderr:
    :func:`progress_log`), ending with the time left at the rate of the units done so far.
    """

    def __init__(self, total: int, desc: str, quiet: bool = False, unit: str = "unit"):
        self.total, self.desc, self.quiet, self.done = total, desc, quiet, 0
        #: units counted as done without being run (rows read back on resume): no part of the rate
        self.resumed = 0
        self.started = time.monotonic()
        self.bar = None
        if not quiet and on_terminal():
            self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False)

    def update(self, n: int = 1, resumed: bool = False) -> None:
        """Count ``n`` units done; ``resumed``: read back from an earlier run, so they say nothing of the rate."""
        self.done += n
        if resumed:
            self.resumed += n
        if self.bar is not None:
            self.bar.update(n)

    def time_left(self) -> str | None:
        """``~Xs left`` at the rate of the units run so far (resumed ones left out); ``None`` when unknown."""
        run = self.done - self.resumed
        return time_left(time.monotonic() - self.started, run, run + self.total - self.done)

    def set_postfix_str(self, text: str, refresh: bool = False) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=refresh)

    def group_done(self, what: str) -> None:
        """One line for a finished group (an epsilon and a sample range, a stage) where no bar draws."""
        if self.bar is None and not self.quiet:
            left = self.time_left()
            progress_logger.info("%s: %s done (%d/%d units)%s", self.desc, what, self.done, self.total,
                                 f", {left}" if left else "")

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
