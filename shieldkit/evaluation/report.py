"""The evaluation report: the summary table printed at the end, report.md and a self-contained report.html.

The report is a list of sections (:data:`SECTIONS`). Each :class:`Section`
turns the typed :class:`~shieldkit.evaluation.records.RunSummary` into blocks
(headings, paragraphs, tables, lists, figures), and one writer per format
renders the blocks, so a section is written once and appears in both files.
Adding a section is one class and one line in :data:`SECTIONS`.

report.html embeds its images as base64 PNGs and loads nothing else (no scripts,
no external styles), so it renders the same from a browser, a CI artefact or an
e-mail attachment. report.md links the same PNGs under ``plots/``.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shieldkit.errors import InvalidInputError
from shieldkit.evaluation.manifest import Manifest, read_manifest
from shieldkit.evaluation.records import (
    MODES,
    DefenseSummary,
    Row,
    RunSummary,
    from_json,
    row_from_json,
    to_json,
)
from shieldkit.evaluation.results import RESULTS, read_rows, write_json
from shieldkit.evaluation.summary import summarize

logger = logging.getLogger(__name__)

FLAG = "!"
#: The full grid's time is extrapolated, not measured: each unit's seconds per attacked sample times
#: the samples the full grid would attack. Smaller batches cost more per sample, so it overstates.
ESTIMATE_NOTE = "extrapolated per sample, an upper bound"
TITLE = "shieldkit robustness report"


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
        """Accuracy of the deployed model on the clean samples."""
        return self.run.defense(defense).clean_accuracy

    def robust_accuracy(self, defense: str = "none", eps: float | None = None, mode: str = "adaptive") -> float:
        """Worst-case robust accuracy of ``defense`` at ``eps`` (the largest when ``None``).

        Args:
            mode: ``"adaptive"`` (worst case over the whole suite) or ``"naive"``
                (attacks on the deployed model only).
        """
        record = self.run.defense(defense)
        key = f"{max(self.run.eps) if eps is None else eps:g}"
        if key not in record.eps:
            raise KeyError(f"eps={eps} is not in this report; it has {', '.join(record.eps)}")
        return record.eps[key].accuracy(mode)

    def flags(self, defense: str, mode: str | None = None) -> list[dict[str, Any]]:
        """Failed gradient-masking checks of ``defense`` (``mode``: naive, adaptive or both), as JSON records."""
        record = self.run.defense(defense)
        modes = MODES if mode is None else (mode,)
        return [to_json(flag) for m in modes for flag in record.flags(m)]

    def table(self) -> str:
        return format_table(self.run)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return f"Report(out_dir={str(self.out_dir)!r}, defenses={self.defenses}, eps={self.run.eps})"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _reasons(record: DefenseSummary, mode: str) -> list[str]:
    return [f"{flag.check}: {flag.reason}" for flag in record.flags(mode)]


# ------------------------------------------------------------------ text table


def format_table(summary: RunSummary) -> str:
    """The summary table printed at the end of a run (plain text)."""
    header = ["defence", "clean"] + [f"eps={k} naive/adaptive" for k in summary.eps_keys]
    lines = []
    for record in summary.defenses:
        cells = [record.label, _pct(record.clean_accuracy)]
        marks = {mode: FLAG if record.flags(mode) else "" for mode in MODES}
        for key in summary.eps_keys:
            entry = record.eps[key]
            cells.append(f"{_pct(entry.naive)}{marks['naive']} / {_pct(entry.adaptive)}{marks['adaptive']}")
        lines.append(cells)
    widths = [max(len(str(row[i])) for row in [header] + lines) for i in range(len(header))]
    render = lambda row: "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()  # noqa: E731
    out = [f"Robust accuracy (%) on {summary.n} {summary.data} samples, {summary.norm} "
           "(worst case per sample over the suite)", render(header), render(["-" * w for w in widths])]
    out += [render(row) for row in lines]
    notes = []
    for record in summary.defenses:
        for mode in MODES:
            for flag in record.flags(mode):
                notes.append(f"  {FLAG} {record.label} ({mode}) {flag.check}: {flag.reason}")
        if record.detector is not None:
            rates = [record.eps[k].detection_rate for k in summary.eps_keys]
            notes.append(f"  {record.label}: detection rate at FPR {record.detector.fpr_fitted:g}: "
                         + ", ".join(f"eps={k}: {_pct(r)}%" for k, r in zip(summary.eps_keys, rates))
                         + " (adaptive column = correct or detected)")
    if notes:
        out += ["", "Flags (gradient-masking checklist) and notes:"] + notes
    time = summary.time
    if summary.cascade:
        out.append(f"\nCascade: {time.attack_seconds:.1f} s of attacks instead of ~"
                   f"{time.estimated_full_grid_seconds:.1f} s for the full grid "
                   f"({100 * time.saved_share:.0f}% saved; {ESTIMATE_NOTE})")
    else:
        out.append(f"\nFull grid: {time.attack_seconds:.1f} s of attacks")
    return "\n".join(out)


# ---------------------------------------------------------------------- blocks


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    """Text with inline markup: ```code```, ``*emphasis*``, ``**bold**``."""

    text: str


@dataclass
class Cell:
    """A table cell; ``reasons`` flag it (the reasons show on hover in HTML)."""

    text: str
    reasons: list[str] = field(default_factory=list)
    css: str = ""


@dataclass
class Table:
    header: list[str]
    rows: list[list[Cell]]
    id: str = ""


@dataclass
class Bullets:
    """A list of items with inline markup; ``flagged`` items carry the flag mark."""

    items: list[str]
    flagged: bool = False


@dataclass
class Figure:
    path: Path
    caption: str
    name: str


Block = Heading | Paragraph | Table | Bullets | Figure


@dataclass
class ReportContext:
    """What a section renders from."""

    summary: RunSummary
    out_dir: Path
    plots_dir: Path
    #: :mod:`shieldkit.evaluation.plots`, or ``None`` without matplotlib (sections then leave their figures out)
    plotting: Any = None


class Section:
    """One part of the report. Subclasses implement :meth:`blocks`; both writers render them."""

    def blocks(self, context: ReportContext) -> list[Block]:
        raise NotImplementedError(f"{type(self).__name__} must implement blocks")


# --------------------------------------------------------------------- sections


class SummaryTable(Section):
    """The title, what the numbers mean, and robust accuracy per defence and epsilon, flagged cells marked."""

    def blocks(self, context: ReportContext) -> list[Block]:
        summary = context.summary
        header = ["defence", "kind", "adaptive attack", "clean"]
        for key in summary.eps_keys:
            header += [f"ε={key} naive", f"ε={key} adaptive"]
        rows = []
        for record in summary.defenses:
            cells = [Cell(record.label, css="name"), Cell(record.kind, css="text"), Cell(record.view, css="text"),
                     Cell(_pct(record.clean_accuracy))]
            for key in summary.eps_keys:
                cells += [Cell(_pct(record.eps[key].accuracy(mode)), _reasons(record, mode)) for mode in MODES]
            rows.append(cells)
        intro = (f"{summary.n} samples of `{summary.data}`, norm {summary.norm}, seed {summary.seed}. Robust accuracy "
                 "(%) is the worst case per sample over the whole suite; *naive* attacks the deployed model as is, "
                 "*adaptive* adds BPDA/EOT/defence-specific attacks. "
                 f"**{FLAG}** marks a number the gradient-masking checklist casts doubt on (the reasons are listed "
                 "below, and show on hover in the HTML report).")
        return [Heading(TITLE, 1), Paragraph(intro), Table(header, rows, id="summary")]


class Flags(Section):
    """Every failed check, with its reason."""

    def blocks(self, context: ReportContext) -> list[Block]:
        items = [f"**{record.label}** ({mode}) `{flag.check}`: {flag.reason}"
                 for record in context.summary.defenses for mode in MODES for flag in record.flags(mode)]
        return [Heading("Flags"), Bullets(items, flagged=True) if items else Paragraph("No check failed.")]


class Detectors(Section):
    """Detection rates and the two ways of counting a detector's robust accuracy."""

    def blocks(self, context: ReportContext) -> list[Block]:
        detectors = [r for r in context.summary.defenses if r.detector is not None]
        if not detectors:
            return []
        rows = [[Cell(record.label, css="name"), Cell(key), Cell(_pct(entry.detection_rate)),
                 Cell(_pct(entry.correct_or_detected)), Cell(_pct(entry.classifier_only))]
                for record in detectors for key, entry in record.eps.items()]
        header = ["detector", "eps", "detection rate", "correct or detected", "classifier only"]
        return [Heading("Detectors"), Table(header, rows)]


class Costs(Section):
    """What the attacks cost, and what the cascade saved."""

    def blocks(self, context: ReportContext) -> list[Block]:
        time = context.summary.time
        return [Heading("Cost"), Paragraph(
            f"Attacks took {time.attack_seconds:.1f} s; the full grid would have taken about "
            f"{time.estimated_full_grid_seconds:.1f} s ({100 * time.saved_share:.0f}% saved by the cascade; "
            f"{ESTIMATE_NOTE}).")]


class Plots(Section):
    """Robust accuracy against epsilon, and naive against adaptive at the largest epsilon."""

    CAPTIONS = {
        "robust_vs_eps": "Robust accuracy against epsilon per defence: naive (dashed) and adaptive (solid).",
        "naive_vs_adaptive": "Naive against adaptive robust accuracy at the largest epsilon.",
    }

    def blocks(self, context: ReportContext) -> list[Block]:
        plotting = context.plotting
        if plotting is None:
            return [Paragraph("No plots: matplotlib is not installed (`pip install 'shieldkit[report]'`).")]
        figures = []
        for name, caption in self.CAPTIONS.items():
            path = getattr(plotting, name)(context.summary, context.plots_dir / f"{name}.png")
            figures.append(Figure(path, caption, name))
        return figures


class ExampleGrid(Section):
    """Clean and adversarial images of the first samples, with the perturbation amplified."""

    CAPTION = ("Examples at the largest epsilon: clean image, adversarial image of the first attack that fooled the "
               "deployed model, and the perturbation amplified to the full range.")

    def blocks(self, context: ReportContext) -> list[Block]:
        plotting = context.plotting
        if plotting is None:
            return []
        path = plotting.example_grid(context.summary, context.out_dir, context.plots_dir / "examples.png")
        return [] if path is None else [Figure(path, self.CAPTION, "examples")]


class Certified(Section):
    """For certified defences: the certified accuracy (a lower bound) beside the attacks' (upper bounds)."""

    CAPTION = ("Certified accuracy against radius (lower bound) and the attacks' robust accuracy at the radius each "
               "epsilon implies (upper bounds): the true robust accuracy lies between them.")

    def blocks(self, context: ReportContext) -> list[Block]:
        summary = context.summary
        certified = [d for d in summary.defenses if d.certified is not None]
        if not certified:
            return []
        blocks: list[Block] = [Heading("Certified robustness"), Paragraph(
            "An attack gives an upper bound on robust accuracy (what it did not break may still be breakable); a "
            "certificate gives a lower bound no attack can beat. Each row brackets the truth from both sides at the "
            "radius each ε of the grid implies in the certificate's norm (an L-inf ε reaches ε·√d in L2). "
            "*disproved*: samples an attack broke inside their certified radius (the `certificate` check).")]
        header = ["defence", "ε", "radius", "certified", "naive", "adaptive", "disproved"]
        rows = []
        for record in certified:
            reasons = [r for r in _reasons(record, "adaptive") if r.startswith("certificate")]
            for key, point in record.certified.at_eps.items():
                radius = "-" if point.radius is None else f"{point.radius:.3g}"
                rows.append([Cell(record.label, css="name"), Cell(key), Cell(radius), Cell(_pct(point.certified)),
                             Cell(_pct(point.naive)), Cell(_pct(point.adaptive)),
                             Cell(str(len(point.disproved.get("adaptive", []))), reasons)])
        blocks.append(Table(header, rows))
        for record in certified:
            found = record.certified
            settings = ", ".join(f"{k}={v}" for k, v in found.params.items() if k not in ("bounds", "seed"))
            blocks.append(Paragraph(
                f"**{record.label}** ({settings}): abstained on {100 * found.abstained:.1f}% of the samples; "
                f"certification took {found.seconds:.1f} s, {found.forwards} forward passes, {found.queries} images."))
        plotting = context.plotting
        if plotting is not None:
            path = plotting.certified_vs_empirical(summary, context.plots_dir / "certified.png")
            if path is not None:
                blocks.append(Figure(path, self.CAPTION, "certified"))
        return blocks


class AttackTables(Section):
    """Per defence: each attack's samples attacked and fooled, time and passes, per stage and epsilon."""

    HEADER = ["eps", "stage", "attack", "access", "attacked", "fooled", "seconds", "forwards", "backwards", "errors"]

    def blocks(self, context: ReportContext) -> list[Block]:
        blocks: list[Block] = [Heading("Attacks per defence")]
        for record in context.summary.defenses:
            rows = [[Cell(key), Cell(a.stage, css="text"), Cell(a.attack, css="text"), Cell(a.access, css="text"),
                     Cell(str(a.attacked)), Cell(str(a.fooled)), Cell(f"{a.seconds:.2f}"), Cell(str(a.forwards)),
                     Cell(str(a.backwards)), Cell(str(a.errors))]
                    for key, entry in record.eps.items() for a in entry.attacks]
            blocks += [Heading(record.label, 3), Paragraph(f"Adaptive target: {record.view}."),
                       Table(self.HEADER, rows)]
        blocks.append(Paragraph("Configuration: `config.json`; environment: `environment.json`; every unit of "
                                "work: `results.jsonl`."))
        return blocks


#: The report's sections, in order. A new section is a :class:`Section` subclass added here.
class Diagnosis(Section):
    """What the diagnosis found on each attack target before any attack, and the remedies it chose."""

    def blocks(self, context: ReportContext) -> list[Block]:
        records = [r for r in context.summary.defenses if r.diagnosis is not None]
        if not records:
            return []
        rows = []
        for record in records:
            row = record.diagnosis
            found = [f for f in row.diagnosis.findings if f.found]
            findings = "; ".join(f"{f.check}: {f.detail}" for f in found) or "nothing found"
            remedies = "; ".join(f"{note.name} ({note.attack}): {note.reason}" for note in row.remedies) or "none needed"
            rows.append([Cell(record.label, css="name"), Cell(row.target, css="text"),
                         Cell(findings, [f.check for f in found], css="text"), Cell(remedies, css="text")])
        intro = ("Before attacking, each attack target is probed from outside (repeated and slightly perturbed "
                 "forwards, gradients, outputs); each finding chooses an escalation that the adaptive stage runs "
                 "with no hint from the user (see docs/diagnosis.md and docs/escalation.md).")
        return [Heading("Diagnosis"), Paragraph(intro),
                Table(["defence", "diagnosed", "findings", "remedies run (attack): why"], rows, id="diagnosis")]


class BrokenBy(Section):
    """Per defence and epsilon, how many samples each attack broke first: which attack the number rests on."""

    def blocks(self, context: ReportContext) -> list[Block]:
        summary = context.summary
        rows = []
        for record in summary.defenses:
            for key in summary.eps_keys:
                entry = record.eps[key]
                for attack, count in entry.broken_by.items():
                    rows.append([Cell(record.label, css="name"), Cell(key), Cell(attack, css="text"),
                                 Cell(str(count))])
        if not rows:
            return []
        intro = ("Every sample fooled counted once, under the first attack that fooled it (stages in order: naive, "
                 "black-box, adaptive; the suite's order within each). An attack with 0 added nothing the ones "
                 "before it had not found.")
        return [Heading("Attack that broke it"), Paragraph(intro),
                Table(["defence", "eps", "attack", "samples it broke first"], rows, id="broken-by")]


SECTIONS: list[Section] = [SummaryTable(), Flags(), Diagnosis(), BrokenBy(), Detectors(), Certified(), Costs(),
                           Plots(), ExampleGrid(), AttackTables()]


def _plotting():
    try:
        from shieldkit.evaluation import plots

        plots.pyplot()
        return plots
    except ImportError as error:
        logger.warning("no plots in the report (%s); install shieldkit[report]", error)
        return None


# ---------------------------------------------------------------------- writers


def reduce_run(out_dir: Path, rows: list[Row], manifest: Manifest, quiet: bool = True) -> RunSummary:
    """The last stage: the summary of ``rows`` under ``manifest``, written as ``summary.json``, ``report.md``
    and ``report.html`` into ``out_dir``; returns the summary. Reads the run folder only (no model, no data)."""
    summary = summarize(rows, manifest)
    write_json(Path(out_dir) / "summary.json", to_json(summary))
    write_reports(Path(out_dir), summary, quiet=quiet)
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
    return reduce_run(out, rows, manifest, quiet=quiet)


def write_reports(out_dir: Path, summary: RunSummary, quiet: bool = True,
                  sections: list[Section] | None = None) -> None:
    """Write plots/*.png, report.md and report.html into ``out_dir`` from ``sections`` (default :data:`SECTIONS`)."""
    plots = out_dir / "plots"
    plots.mkdir(exist_ok=True)
    context = ReportContext(summary, out_dir, plots, _plotting())
    blocks = [block for section in (SECTIONS if sections is None else sections) for block in section.blocks(context)]
    (out_dir / "report.md").write_text(render_markdown(blocks, out_dir), encoding="utf-8")
    (out_dir / "report.html").write_text(render_html(blocks), encoding="utf-8")


def _markdown_cell(cell: Cell) -> str:
    return cell.text.replace("|", "\\|") + (f" {FLAG}" if cell.reasons else "")


def render_markdown(blocks: list[Block], out_dir: Path) -> str:
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Table):
            lines += ["| " + " | ".join(block.header) + " |", "|" + "---|" * len(block.header)]
            lines += ["| " + " | ".join(_markdown_cell(c) for c in row) + " |" for row in block.rows]
            lines.append("")
        elif isinstance(block, Bullets):
            lines += [f"- {item}" for item in block.items] + [""]
        elif isinstance(block, Figure):
            link = block.path.relative_to(out_dir).as_posix()
            lines += [f"![{block.caption}]({link})", "", f"*{block.caption}*", ""]
    return "\n".join(lines)


_STYLE = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 72em;
       color: #222; padding: 0 1em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f3f3f3; }
td.name { text-align: left; font-weight: 600; }
td.text { text-align: left; }
td.flagged { background: #fde2e1; }
.flag { color: #b00020; font-weight: 700; cursor: help; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-style: italic; color: #555; }
li.flag-reason { margin: 0.3em 0; }
"""

_INLINE = [(re.compile(r"`([^`]+)`"), r"<code>\1</code>"), (re.compile(r"\*\*([^*]+)\*\*"), r"<b>\1</b>"),
           (re.compile(r"\*([^*]+)\*"), r"<em>\1</em>")]
_FLAG_SPAN = f'<span class="flag">{FLAG}</span>'


def _inline_html(text: str) -> str:
    out = html.escape(text, quote=False)
    for pattern, replacement in _INLINE:
        out = pattern.sub(replacement, out)
    return out.replace(f"<b>{FLAG}</b>", _FLAG_SPAN)


def _html_cell(cell: Cell) -> str:
    if cell.reasons:
        title = html.escape(" | ".join(cell.reasons), quote=True)
        return f'<td class="flagged" title="{title}">{html.escape(cell.text)} {_FLAG_SPAN}</td>'
    return f'<td class="{cell.css}">{html.escape(cell.text)}</td>'


def render_html(blocks: list[Block]) -> str:
    esc = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             '<link rel="icon" href="data:,">', f"<title>{TITLE}</title>", f"<style>{_STYLE}</style></head><body>"]
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{esc(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{_inline_html(block.text)}</p>")
        elif isinstance(block, Table):
            table_id = f' id="{esc(block.id)}"' if block.id else ""
            parts.append(f"<table{table_id}><thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in block.header)
                         + "</tr></thead><tbody>")
            parts += ["<tr>" + "".join(_html_cell(c) for c in row) + "</tr>" for row in block.rows]
            parts.append("</tbody></table>")
        elif isinstance(block, Bullets):
            css, mark = (' class="flag-reason"', _FLAG_SPAN + " ") if block.flagged else ("", "")
            parts.append("<ul>" + "".join(f"<li{css}>{mark}{_inline_html(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Figure):
            encoded = base64.b64encode(block.path.read_bytes()).decode("ascii")
            parts.append(f'<figure><img id="plot-{esc(block.name)}" alt="{esc(block.caption)}" '
                         f'src="data:image/png;base64,{encoded}"><figcaption>{esc(block.caption)}</figcaption></figure>')
    parts.append("</body></html>")
    return "\n".join(parts)
