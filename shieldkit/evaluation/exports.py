"""The run as tables other tools read: ``summary.csv`` and ``results.csv`` beside ``summary.json``, and the
summary as a pandas DataFrame (:meth:`Report.to_frame <shieldkit.evaluation.report.Report.to_frame>`).

``summary.csv`` has one row per defence x epsilon x mode (``naive``, ``adaptive``), the shape of a
RobustBench leaderboard row; ``results.csv`` one row per unit of work of the rows of ``results.jsonl`` that
measure accuracy (the clean rows and the attack rows). Both are written at the end of every run and by
``shieldkit report DIR`` (:func:`~shieldkit.evaluation.report.write_reports`).

Every accuracy, interval bound and share is a **fraction** in ``[0, 1]`` (``0.625``, not ``62.5``), as in
``summary.json`` and :class:`~shieldkit.evaluation.report.Report`'s methods; only the tables written for people
(the console table, ``report.md``, ``report.html``) show percentages. ``eps`` is the number, ``eps_label`` how
papers write it (``8/255``). An empty cell is a value that does not apply (a detector's detection rate on a
defence that detects nothing); a non-finite number is written ``inf``, ``-inf`` or ``nan``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from shieldkit.core.threat import format_eps
from shieldkit.evaluation.records import MODES, AttackRow, CleanRow, eps_key, row_from_json
from shieldkit.evaluation.results import RESULTS, read_rows
from shieldkit.evaluation.summaries import DefenseSummary, EpsSummary, RunSummary

SUMMARY_CSV = "summary.csv"
RESULTS_CSV = "results.csv"

#: the stages whose attacks make up each mode's worst case
MODE_STAGES = {"naive": ("naive", "blackbox"), "adaptive": ("naive", "blackbox", "adaptive")}

#: ``summary.csv``'s columns in order: (name, type: ``str``, ``int`` or ``float``, what it holds).
SUMMARY_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("defense", "str", "the defence's label in the run ('none': the model undefended)"),
    ("defense_name", "str", "its registered name"),
    ("kind", "str", "transform, postprocess, detector, trainer or none"),
    ("data", "str", "the evaluated data set"),
    ("n", "int", "samples evaluated"),
    ("norm", "str", "the threat model's norm: linf, l2, l1 or l0"),
    ("eps", "float", "the budget, a number"),
    ("eps_label", "str", "the budget as papers write it (8/255)"),
    ("mode", "str", "naive (attacks on the deployed model) or adaptive (the whole suite: the worst case)"),
    ("clean_accuracy", "float", "fraction of samples classified correctly without attack"),
    ("clean_low", "float", "its 95% confidence interval, low end (fraction)"),
    ("clean_high", "float", "its 95% confidence interval, high end (fraction)"),
    ("robust_accuracy", "float", "fraction of samples every attack of the mode left correct (worst case per "
                                 "sample; for a randomised model the expected accuracy)"),
    ("robust_low", "float", "its 95% confidence interval, low end (fraction)"),
    ("robust_high", "float", "its 95% confidence interval, high end (fraction)"),
    ("interval_method", "str", "how the intervals were computed"),
    ("judging_draws", "int", "forwards judging each point (1: a deterministic model)"),
    ("robust_majority", "float", "a randomised model's majority-vote robust accuracy (fraction); empty otherwise"),
    ("detection_rate", "float", "a detector's share of the misclassified adversarial examples it flagged (on the "
                                "adaptive rows: every stage's examples); empty otherwise"),
    ("attacks_run", "int", "attacks of the mode that ran at this budget"),
    ("attacks", "str", "those attacks, ';'-separated, in the order they ran"),
    ("broken", "int", "samples the mode's attacks fooled, each counted once"),
    ("top_attack", "str", "the attack that broke most of them first (empty: none broke any)"),
    ("top_attack_broken", "int", "how many it broke first"),
    ("attack_seconds", "float", "seconds the mode's attacks took at this budget"),
    ("forwards", "int", "the model's forward passes they made"),
    ("backwards", "int", "their backward passes"),
    ("queries", "int", "images they forwarded"),
    ("errors", "int", "units of the mode's attacks that crashed (their samples count as robust)"),
    ("flags", "str", "failed gradient-masking checks of the mode, ';'-separated: numbers in doubt"),
)

#: ``results.csv``'s columns in order: (name, type, what it holds).
RESULTS_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("type", "str", "clean (the deployed system on clean samples) or attack (one attack on one chunk)"),
    ("key", "str", "the unit of work's key in results.jsonl"),
    ("defense", "str", "the defence's label"),
    ("eps", "float", "the budget (empty on clean rows)"),
    ("eps_label", "str", "the budget as papers write it"),
    ("stage", "str", "naive, blackbox or adaptive (empty on clean rows)"),
    ("attack", "str", "the attack's label in the suite"),
    ("attack_name", "str", "its registered name"),
    ("access", "str", "gradient, score or decision"),
    ("chunk_start", "int", "first sample index of the chunk"),
    ("chunk_end", "int", "one past its last"),
    ("attacked", "int", "samples attacked (the cascade's candidates; clean rows: the chunk's samples)"),
    ("correct", "int", "clean rows: samples classified correctly"),
    ("fooled", "int", "samples fooled (on every judging draw)"),
    ("misclassified", "int", "samples misclassified (on most draws)"),
    ("detected", "int", "samples a detector flagged"),
    ("draws", "int", "judging draws per point"),
    ("seconds", "float", "the unit's seconds"),
    ("forwards", "int", "forward passes"),
    ("backwards", "int", "backward passes"),
    ("queries", "int", "images forwarded"),
    ("error", "str", "a crash, in one line (its samples count as robust)"),
)


def header_doc(columns: tuple[tuple[str, str, str], ...]) -> str:
    """The columns in words, one line each (what docs/evaluate.md lists)."""
    return "\n".join(f"{name} ({kind}): {what}" for name, kind, what in columns)


# ---------------------------------------------------------------------------- rows


def summary_rows(summary: RunSummary) -> list[dict[str, Any]]:
    """``summary.csv``'s rows: per defence, per epsilon of the grid, per mode (fractions, not percentages)."""
    values = {eps_key(eps): float(eps) for eps in summary.eps}
    rows = []
    for record in summary.defenses:
        for key, entry in record.eps.items():
            eps = values.get(key, float(key))
            for mode in MODES:
                rows.append(_summary_row(summary, record, eps, entry, mode))
    return rows


def _summary_row(summary: RunSummary, record: DefenseSummary, eps: float, entry: EpsSummary,
                 mode: str) -> dict[str, Any]:
    stats = [a for a in entry.attacks if a.stage in MODE_STAGES[mode]]
    labels = {a.attack for a in stats} if mode == "naive" else set(entry.broken_by)
    broken = {label: count for label, count in entry.broken_by.items() if label in labels}
    top = max(broken, key=lambda label: broken[label], default="")  # the first of equals, in run order
    low, high = entry.interval.get(mode, (None, None))
    return {
        "defense": record.label, "defense_name": record.name, "kind": record.kind, "data": summary.data,
        "n": record.n, "norm": summary.norm, "eps": eps, "eps_label": format_eps(eps), "mode": mode,
        "clean_accuracy": record.clean_accuracy, "clean_low": record.clean_interval[0],
        "clean_high": record.clean_interval[1],
        "robust_accuracy": entry.accuracy(mode), "robust_low": low, "robust_high": high,
        "interval_method": record.interval_method, "judging_draws": record.judging_draws,
        "robust_majority": (entry.majority or {}).get(mode),
        "detection_rate": entry.detection_rate if mode == "adaptive" else None,
        "attacks_run": len(stats), "attacks": ";".join(_label(a.stage, a.attack) for a in stats),
        "broken": sum(broken.values()), "top_attack": top if broken.get(top) else "",
        "top_attack_broken": broken.get(top, 0),
        "attack_seconds": sum(a.seconds for a in stats), "forwards": sum(a.forwards for a in stats),
        "backwards": sum(a.backwards for a in stats), "queries": sum(a.queries for a in stats),
        "errors": sum(a.errors for a in stats),
        "flags": ";".join(flag.check for flag in record.flags(mode)),
    }


def _label(stage: str, attack: str) -> str:
    """An attack as the report's "attack that broke it" counts name it: adaptive runs of a suite attack say so."""
    return f"{attack} (adaptive)" if stage == "adaptive" and " via " not in attack else attack


def results_rows(rows: Iterable[Any]) -> list[dict[str, Any]]:
    """``results.csv``'s rows: the clean and attack rows of ``results.jsonl`` (typed rows), in file order."""
    table = []
    for row in rows:
        if isinstance(row, CleanRow):
            table.append({"type": row.type, "key": row.key, "defense": row.defense, "eps": None, "eps_label": "",
                          "stage": "", "attack": "", "attack_name": "", "access": "",
                          "chunk_start": row.chunk[0], "chunk_end": row.chunk[1],
                          "attacked": row.chunk[1] - row.chunk[0], "correct": len(row.correct), "fooled": None,
                          "misclassified": None, "detected": len(row.detected), "draws": row.draws,
                          "seconds": None, "forwards": None, "backwards": None, "queries": None, "error": ""})
        elif isinstance(row, AttackRow):
            table.append({"type": row.type, "key": row.key, "defense": row.defense, "eps": float(row.eps),
                          "eps_label": format_eps(row.eps), "stage": row.stage, "attack": row.attack,
                          "attack_name": row.name, "access": row.access,
                          "chunk_start": row.chunk[0], "chunk_end": row.chunk[1], "attacked": len(row.attacked),
                          "correct": None, "fooled": len(row.fooled), "misclassified": len(row.misclassified),
                          "detected": len(row.detected), "draws": row.draws, "seconds": row.seconds,
                          "forwards": row.forwards, "backwards": row.backwards, "queries": row.queries,
                          "error": row.error or ""})
    return table


# ------------------------------------------------------------------------- writers


def csv_text(columns: tuple[tuple[str, str, str], ...], rows: list[dict[str, Any]]) -> str:
    """A table as CSV (a header line, then one line per row; ``None`` as an empty cell, floats in full)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([name for name, _, _ in columns])
    for row in rows:
        writer.writerow(["" if row[name] is None else repr(row[name]) if kind == "float" else row[name]
                         for name, kind, _ in columns])
    return buffer.getvalue()


def write_exports(out_dir: str | Path, summary: RunSummary) -> None:
    """Write ``summary.csv`` (from ``summary``) and ``results.csv`` (from the folder's ``results.jsonl``, when it
    has one) into ``out_dir``."""
    out = Path(out_dir)
    _write(out / SUMMARY_CSV, csv_text(SUMMARY_COLUMNS, summary_rows(summary)))
    if (out / RESULTS).is_file():
        rows = []
        for data in read_rows(out):
            if data.get("type") in ("clean", "attack"):
                rows.append(row_from_json(data))
        _write(out / RESULTS_CSV, csv_text(RESULTS_COLUMNS, results_rows(rows)))


def _write(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)


# ------------------------------------------------------------------------ DataFrame


def summary_frame(summary: RunSummary):
    """``summary.csv`` as a pandas DataFrame: the same columns and values (fractions), typed (an empty cell is
    NaN in a number column). Needs pandas (``pip install pandas``, or the ``frames`` extra)."""
    pandas = _pandas()
    return frame(pandas, SUMMARY_COLUMNS, summary_rows(summary))


def frame(pandas, columns: tuple[tuple[str, str, str], ...], rows: list[dict[str, Any]]):
    """A DataFrame of ``rows`` with ``columns``' names and types (str: object, int: int64, float: float64)."""
    data = {}
    for name, kind, _ in columns:
        values = [row[name] for row in rows]
        if kind == "float":
            data[name] = pandas.array([float("nan") if v is None else float(v) for v in values], dtype="float64")
        elif kind == "int" and all(v is not None for v in values):
            data[name] = pandas.array(values, dtype="int64")
        elif kind == "int":
            data[name] = pandas.array([float("nan") if v is None else float(v) for v in values], dtype="float64")
        else:
            data[name] = pandas.Series(["" if v is None else str(v) for v in values], dtype=object).astype(str)
    return pandas.DataFrame(data, columns=[name for name, _, _ in columns])


def read_frame(path: str | Path, columns: tuple[tuple[str, str, str], ...] = SUMMARY_COLUMNS):
    """A CSV this module wrote, read with pandas as :func:`frame` types it (what ``to_frame`` equals)."""
    pandas = _pandas()
    text = [name for name, kind, _ in columns if kind == "str"]
    # every float written in full is read back exactly (pandas 3's default; before, "round_trip" asked for it)
    exact = {"float_precision": "round_trip"} if int(pandas.__version__.split(".")[0]) < 3 else {}
    return pandas.read_csv(path, dtype={name: str for name in text}, keep_default_na=False,
                           na_values={name: [""] for name, kind, _ in columns if kind != "str"}, **exact)


def _pandas():
    try:
        import pandas
    except ImportError:
        raise ImportError("Report.to_frame needs pandas: pip install pandas (or pip install 'shieldkit[frames]')"
                          ) from None
    return pandas
