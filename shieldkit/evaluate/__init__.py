"""Robustness evaluation: attack x defence grids with adaptive attacks, masking checks, resumable runs, reports.

``shieldkit.evaluate.evaluate(model, data, attacks, defenses, eps)`` (exported as
``shieldkit.evaluate`` 's main function) returns a :class:`Report`; the
``shieldkit evaluate`` command runs the same from a TOML file or flags.
"""

from shieldkit.evaluate.config import EvalConfig
from shieldkit.evaluate.report import Report
from shieldkit.evaluate.runner import Runner, evaluate

__all__ = ["EvalConfig", "Report", "Runner", "evaluate"]
