"""``shieldkit.evaluate`` is a function (:func:`shieldkit.evaluation.api.evaluate`), not a package.

The evaluation's subpackage is :mod:`shieldkit.evaluation`. Code written for the earlier layout, where the
subpackage was called ``shieldkit.evaluate``, imports this module and gets an ImportError that says where
each name went, instead of a bare "No module named".
"""

raise ImportError(
    "shieldkit.evaluate is a function, not a module: call shieldkit.evaluate(model, data, ...) or "
    "`from shieldkit import evaluate`; the evaluation's modules moved to shieldkit.evaluation "
    "(e.g. `from shieldkit.evaluation import Report, EvalConfig`)"
)
