"""The exception hierarchy.

Every error subclasses a built-in so that ``except ValueError`` and friends keep
working, and every message names the attack, parameter, argument or plugin at fault.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterable


class ShieldkitError(Exception):
    """Base class of every shieldkit error."""


class InvalidInputError(ShieldkitError, ValueError):
    """An input tensor (images, labels, targets, model outputs) is not what the contract needs."""


class InvalidModelError(InvalidInputError):
    """The model cannot be attacked as given (wrong output shape, split across devices, ...)."""


class NoGradientError(InvalidModelError, RuntimeError):
    """A gradient attack met a model that gives no input gradient (a forward under ``torch.no_grad`` or
    ``inference_mode``, a quantised or exported kernel without a backward, a NumPy round trip).

    Subclasses ``RuntimeError`` too: what torch's autograd raised before shieldkit named the problem.
    """

    def __init__(self, attack: str):
        super().__init__(
            f"{attack}: the model gives no input gradient (its forward runs under torch.no_grad or inference_mode, "
            "or through a kernel without a backward, such as a quantised layer): a gradient attack cannot run on "
            "it; use a score-based attack (square, spsa) or shieldkit.evaluate, whose diagnosis sends such a model "
            "to its remedies (BPDA, smoothing, a surrogate)")


class InvalidParameterError(ShieldkitError, TypeError, ValueError):
    """A constructor or call parameter is unknown or out of range.

    Subclasses both ``TypeError`` (what Python raises for an unknown keyword) and
    ``ValueError`` (what it raises for a bad value).
    """


class UnknownNameError(ShieldkitError, KeyError):
    """No attack, defence, model or dataset of that name is registered.

    The message lists the closest registered names.
    """

    def __init__(self, kind: str, name: str, known: Iterable[str], hint: str = ""):
        self.kind = kind
        self.name = name
        self.suggestions = close_matches(name, known)
        message = f"unknown {kind} {name!r}"
        if self.suggestions:
            message += "; did you mean " + ", ".join(repr(s) for s in self.suggestions) + "?"
        if hint:
            message += f" {hint}"
        super().__init__(message)

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0])


class MissingDependencyError(ShieldkitError, ImportError):
    """An optional library a backend needs is not installed; the message says what to install."""


class AttackContractError(ShieldkitError, RuntimeError):
    """An attack returned something that breaks the attack contract (bounds, epsilon-ball, shape)."""


class PluginError(ShieldkitError, RuntimeError):
    """A plugin failed to load or registered something invalid (raised in strict mode)."""


class DatasetNotFoundError(ShieldkitError, FileNotFoundError):
    """Dataset files are missing; the message says which files to put where."""


def close_matches(name: str, known: Iterable[str], n: int = 3) -> list[str]:
    """The registered names closest to ``name``, families first."""
    known = list(known)
    families = sorted({k.split(".")[0] for k in known})
    candidates = families + known
    matches = difflib.get_close_matches(name, candidates, n=n, cutoff=0.6)
    matches += [k for k in known if name and name in k and k not in matches]
    return matches[:n]


# ------------------------------------------------------- what commands report

#: Exit statuses of the ``shieldkit`` commands: success, failure while running, bad usage or bad input.
EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

#: What a command's set-up may raise for bad input: reported by :func:`usage_error`, exit status 2.
SETUP_ERRORS = (ShieldkitError, ValueError, TypeError, KeyError, OSError)


def one_line(message: object) -> str:
    """A refusal's message on one line, as every command prints it: any line breaks inside become '; '."""
    return "; ".join(part.strip() for part in str(message).splitlines() if part.strip())


def usage_error(command: str, error: BaseException) -> int:
    """Print a bad-input error as one line (a KeyError's message unquoted); returns exit status 2."""
    message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    print(f"shieldkit {command}: error: {one_line(message)}", file=sys.stderr)
    return EXIT_USAGE
