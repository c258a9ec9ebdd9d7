"""Robustness evaluation: attack x defence grids with adaptive attacks, masking checks, resumable runs, reports.

``shieldkit.evaluate(model, data, attacks, defenses, eps)`` returns a :class:`Report`
(this package is callable: calling it calls :func:`evaluate`, so ``sk.evaluate(...)``
works whether or not the subpackage has been imported). The ``shieldkit evaluate``
command runs the same from a TOML file or flags.
"""

import sys
import types

from shieldkit.evaluate.config import EvalConfig
from shieldkit.evaluate.report import Report
from shieldkit.evaluate.runner import Runner, evaluate

__all__ = ["EvalConfig", "Report", "Runner", "evaluate"]


class _CallableModule(types.ModuleType):
    """``import shieldkit.evaluate`` binds this module as ``shieldkit.evaluate``; calling it evaluates."""

    def __call__(self, *args, **kwargs):
        return evaluate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
