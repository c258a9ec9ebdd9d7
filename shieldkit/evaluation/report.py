"""The evaluation's last stage: the summary table printed at the end, summary.json, report.md and report.html.

:func:`reduce_run` summarises a run's rows under its manifest and writes the
summary and the reports; :func:`rebuild_reports` does the same from a run folder
alone (``shieldkit report DIR``). The reports' content is the sections of
:mod:`~shieldkit.evaluation.sections`, written by :mod:`~shieldkit.evaluation.render`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from shieldkit.core.errors import InvalidInputError
from shieldkit.core.threat import format_eps
from shieldkit.evaluation import sections as report_sections
from shieldkit.evaluation.exports import summary_frame, write_exports
from shieldkit.evaluation.manifest import Manifest, read_manifest
from shieldkit.evaluation.records import MODES, Row, eps_label, from_json, row_from_json, to_json
from shieldkit.evaluation.render import render_html, render_markdown
from shieldkit.evaluation.results import RESULTS, read_rows, write_json
from shieldkit.evaluation.sections import (
    ESTIMATE_NOTE,
    FLAG,
    ReportContext,
    Section,
    diagnosis_findings,
    flag_reasons,
    percent,
    setup_lines,
    with_interval,
)
from shieldkit.evaluation.summaries import EpsSummary, RunSummary
from shieldkit.evaluation.summary import summarize
from shieldkit.plugins.registry import get_registry

logger = logging.getLogger(__name__)



class Report:
    """What :func:`shieldkit.evaluate` returns: the summary and where everything was written.

    Attributes:
        out_dir: the run's folder.
        run: the typed summary.
    """

    def __init__(self, out_dir: str | Path, summary: RunSummary):
        self.out_dir = Path(out_dir)
        self.run = summary

    @classmethod
    def load(cls, out_dir: str | Path) -> Report:
        """The report of a finished run, from its ``summary.json``."""
        out_dir = Path(out_dir)
        return cls(out_dir, from_json(RunSummary, json.loads((out_dir / "summary.json").read_text())))

    @property
    def summary(self) -> dict[str, Any]:
        """The content of ``summary.json`` (the JSON form of :attr:`run`)."""
        return to_json(self.run)

    @property
    def html_path(self) -> Path:
        return self.out_dir / "report.html"

    @property
    def markdown_path(self) -> Path:
        return self.out_dir / "report.md"

    @property
    def results_path(self) -> Path:
        return self.out_dir / "results.jsonl"

    @property
    def defenses(self) -> list[str]:
        return [d.label for d in self.run.defenses]

    def clean_accuracy(self, defense: str = "none") -> float:
        """Accuracy of the deployed model on the clean samples, a fraction in [0, 1] (``0.625``; the printed
        tables show percentages, ``62.5``)."""
        return self.run.defense(defense).clean_accuracy

    def robust_accuracy(self, defense: str = "none", eps: float | None = None, mode: str = "adaptive") -> float:
        """Worst-case robust accuracy of ``defense`` at ``eps`` (the largest when ``None``), a fraction in [0, 1]
        (``0.625`` where the printed tables show ``62.5``: percentages are for people only; summary.json,
        summary.csv and :meth:`to_frame` hold fractions too).

        Args:
            mode: ``"adaptive"`` (worst case over the whole suite) or ``"naive"``
                (attacks on the deployed model only).
        """
        return self._eps_entry(defense, eps).accuracy(mode)

    def robust_interval(self, defense: str = "none", eps: float | None = None,
                        mode: str = "adaptive") -> tuple[float, float]:
        """The 95% confidence interval ``(low, high)`` of :meth:`robust_accuracy` (same arguments), fractions in
        [0, 1]."""
        return tuple(self._eps_entry(defense, eps).interval[mode])

    def _eps_entry(self, defense: str, eps: float | None) -> EpsSummary:
        """``defense``'s summary at ``eps`` (the largest when ``None``)."""
        record = self.run.defense(defense)
        key = f"{max(self.run.eps) if eps is None else eps:g}"
        if key not in record.eps:
            raise KeyError(f"eps={format_eps(eps)} is not in this report; it has "
                           f"{', '.join(eps_label(k) for k in record.eps)}")
        return record.eps[key]

    def flags(self, defense: str, mode: str | None = None) -> list[dict[str, Any]]:
        """Failed gradient-masking checks of ``defense`` (``mode``: naive, adaptive or both), as JSON records."""
        record = self.run.defense(defense)
        modes = MODES if mode is None else (mode,)
        return [to_json(flag) for m in modes for flag in record.flags(m)]

    def to_frame(self):
        """``summary.csv`` as a pandas DataFrame: one row per defence x eps x mode, the same columns and values
        (fractions in [0, 1]; :mod:`~shieldkit.evaluation.exports` lists the columns). Needs pandas
        (``pip install pandas``, or ``pip install 'shieldkit[frames]'``)."""
        return summary_frame(self.run)

    def table(self) -> str:
        return format_table(self.run)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return f"Report(out_dir={str(self.out_dir)!r}, defenses={self.defenses}, eps={self.run.eps})"


# ------------------------------------------------------------------ text table


def format_table(summary: RunSummary) -> str:
    """The summary table printed at the end of a run (plain text)."""
    header = ["defence", "clean"] + [f"eps={eps_label(k)} naive/adaptive" for k in summary.eps_keys]
    lines = []
    for record in summary.defenses:
        cells = [record.label, with_interval(record.clean_accuracy, record.clean_interval)]
        for key in summary.eps_keys:
            entry = record.eps[key]
            cells.append(" / ".join(with_interval(entry.accuracy(mode), entry.interval.get(mode))
                                    + (FLAG if flag_reasons(record, mode, entry.accuracy(mode)) else "")
                                    for mode in MODES))
        lines.append(cells)
    widths = [max(len(str(row[i])) for row in [header] + lines) for i in range(len(header))]
    render = lambda row: "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()  # noqa: E731
    out = setup_lines(summary, settings=False) + [""]
    if summary.warnings:
        out += [f"WARNING {warning}" for warning in summary.warnings] + [""]
    out += [f"Robust accuracy (%) on {summary.n} {summary.data} samples, {summary.norm} "
            "(worst case per sample over the suite; [95% confidence interval])", render(header),
            render(["-" * w for w in widths])]
    out += [render(row) for row in lines]
    notes = []
    for record in summary.defenses:
        if record.judging_draws > 1:
            notes.append(f"  {record.label}: randomised, judged on {record.judging_draws} draws per image: expected "
                         "accuracies (majority vote: clean "
                         f"{percent(record.clean_majority)}, adaptive "
                         + ", ".join(f"eps={eps_label(k)}: {percent((record.eps[k].majority or {}).get('adaptive'))}"
                                     for k in summary.eps_keys) + ")")
        if record.detector is not None:
            rates = [record.eps[k].detection_rate for k in summary.eps_keys]
            notes.append(f"  {record.label}: detection rate at FPR {record.detector.fpr_fitted:g}: "
                         + ", ".join(f"eps={eps_label(k)}: {percent(r)}%" for k, r in zip(summary.eps_keys, rates))
                         + " (adaptive column = correct or detected)")
    if notes:
        out += ["", "Notes:"] + notes

    time = summary.time
    if summary.cascade:
        out.append(f"\nCascade: {time.attack_seconds:.1f} s of attacks instead of ~"
                   f"{time.estimated_full_grid_seconds:.1f} s for the full grid "
                   f"({100 * time.saved_share:.0f}% saved; {ESTIMATE_NOTE})")
    else:
        out.append(f"\nFull grid: {time.attack_seconds:.1f} s of attacks")
    return "\n".join(out + ["", *short_summary(summary)])


def short_summary(summary: RunSummary) -> list[str]:
    """pytest's short summary for a run: every diagnosis finding with its remedy, every failed check and every
    warning, one line each, at the end of the console output where they are seen."""
    lines = [f"FINDING {line}" for line in diagnosis_findings(summary)]
    lines += [f"FLAGGED {record.label} ({mode}) {flag.check}: {flag.reason}"
              for record in summary.defenses for mode in MODES for flag in record.flags(mode)]
    lines += [f"WARNING {warning}" for warning in summary.warnings]
    return ["Short summary (diagnosis findings and their remedies, failed checks, warnings):",
            *(lines or ["  nothing found, no check failed, no warning"])]


def _plotting():
    try:
        from shieldkit.evaluation import plots

        plots.pyplot()
        return plots
    except ImportError as error:
        logger.warning("no plots in the report (%s); install shieldkit[report]", error)
        return None


# ---------------------------------------------------------------------- writers


def reduce_run(out_dir: Path, rows: list[Row], manifest: Manifest, quiet: bool = True,
               finished: bool = True) -> RunSummary:
    """The last stage: the summary of ``rows`` under ``manifest``, written as ``summary.json``, ``report.md``
    and ``report.html`` into ``out_dir``; returns the summary. Reads the run folder only (no model, no data).
    ``finished``: the run just finished, and the plugins' ``shieldkit_run_finished`` hook is told (a rebuild
    of the reports passes ``False``)."""
    summary = summarize(rows, manifest)
    write_json(Path(out_dir) / "summary.json", to_json(summary))
    write_reports(Path(out_dir), summary, quiet=quiet)
    if finished:
        get_registry().manager.notify("shieldkit_run_finished", summary=to_json(summary), out_dir=Path(out_dir))
    return summary


def rebuild_reports(out_dir: str | os.PathLike, quiet: bool = True) -> RunSummary:
    """``shieldkit report DIR``: rebuild ``summary.json`` and the reports of a finished or half-finished run from
    its ``plan.json`` and ``results.jsonl`` (a torn last row is left out)."""
    out = Path(out_dir)
    manifest = read_manifest(out)
    if not (out / RESULTS).is_file():
        raise InvalidInputError(f"{str(out)!r} has no {RESULTS}: the run wrote no rows")
    try:
        rows = [row_from_json(data) for data in read_rows(out)]
    except (ValueError, TypeError, AttributeError) as error:
        raise InvalidInputError(f"{out / RESULTS} has a row that is not a shieldkit row: {error}") from None
    return reduce_run(out, rows, manifest, quiet=quiet, finished=False)


def write_reports(out_dir: Path, summary: RunSummary, quiet: bool = True,
                  sections: list[Section] | None = None) -> None:
    """Write plots/*.png, report.md and report.html into ``out_dir`` from ``sections`` (default
    :data:`shieldkit.evaluation.sections.SECTIONS`)."""
    plots = out_dir / "plots"
    plots.mkdir(exist_ok=True)
    context = ReportContext(summary, out_dir, plots, _plotting())
    chosen = report_sections.SECTIONS if sections is None else sections
    blocks = [block for section in chosen for block in section.blocks(context)]
    (out_dir / "report.md").write_text(render_markdown(blocks, out_dir), encoding="utf-8")
    (out_dir / "report.html").write_text(render_html(blocks), encoding="utf-8")
    write_exports(out_dir, summary)  # summary.csv, results.csv (shieldkit.evaluation.exports)

