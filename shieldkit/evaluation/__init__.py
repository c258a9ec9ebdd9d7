"""Robustness evaluation: attack x defence grids with adaptive attacks, masking checks, resumable runs, reports.

``shieldkit.evaluate(model, data, attacks, defenses, eps)`` (:func:`~shieldkit.evaluation.api.evaluate`)
returns a :class:`Report`; ``shieldkit evaluate`` runs the same from a TOML file or flags, and
``shieldkit report DIR`` rebuilds a run's reports from its folder. The stages and their data are in
docs/architecture.md ("How a unit flows").
"""

from shieldkit.evaluation.api import evaluate
from shieldkit.evaluation.config import EvalConfig
from shieldkit.evaluation.report import Report
from shieldkit.evaluation.runner import Runner

__all__ = ["EvalConfig", "Report", "Runner", "evaluate"]
