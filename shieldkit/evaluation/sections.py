"""The report's sections: each turns the typed :class:`~shieldkit.evaluation.summaries.RunSummary` into blocks.

The report is a list of sections (:data:`SECTIONS`). Each :class:`Section` returns
blocks (headings, paragraphs, tables, lists, figures), and one writer per format
(:mod:`~shieldkit.evaluation.render`) renders them, so a section is written once and
appears in both report.md and report.html. Adding a section is one class and one
line in :data:`SECTIONS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shieldkit.evaluation.intervals import disjoint
from shieldkit.evaluation.records import MODES, eps_label
from shieldkit.evaluation.summaries import DefenseSummary, RunSummary

FLAG = "!"
#: The full grid's time is extrapolated, not measured: each unit's seconds per attacked sample times
#: the samples the full grid would attack. Smaller batches cost more per sample, so it overstates.
ESTIMATE_NOTE = "extrapolated per sample, an upper bound"
TITLE = "shieldkit robustness report"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def with_interval(value: float, interval: tuple[float, float] | None) -> str:
    """A share in percent with its 95% interval: ``62.5 [52.3-71.9]``."""
    if not interval:
        return percent(value)
    return f"{percent(value)} [{percent(interval[0])}-{percent(interval[1])}]"


def comparisons(summary: RunSummary) -> list[str]:
    """Which differences the report shows are beyond the 95% intervals: naive vs adaptive per defence and
    epsilon, and each defence vs no defence (when the run has ``none``)."""
    lines = []
    reference = next((d for d in summary.defenses if d.label == "none"), None)
    for record in summary.defenses:
        for key in summary.eps_keys:
            entry = record.eps[key]
            naive, adaptive = entry.interval.get("naive"), entry.interval.get("adaptive")
            if naive and adaptive and entry.naive != entry.adaptive:
                beyond = disjoint(naive, adaptive)
                lines.append(f"**{record.label}** at ε={eps_label(key)}: adaptive {percent(entry.adaptive)} vs naive "
                             f"{percent(entry.naive)}: {'beyond' if beyond else 'within'} the intervals"
                             + ("" if beyond else " (the difference may be sampling noise)"))
            if reference is not None and record is not reference:
                other = reference.eps[key]
                if entry.interval.get("adaptive") and other.interval.get("adaptive"):
                    beyond = disjoint(entry.interval["adaptive"], other.interval["adaptive"])
                    lines.append(f"**{record.label}** vs **none** at ε={eps_label(key)}: {percent(entry.adaptive)} vs "
                                 f"{percent(other.adaptive)} (adaptive): {'beyond' if beyond else 'within'} the "
                                 "intervals")
    return lines


def flag_reasons(record: DefenseSummary, mode: str, accuracy: float | None = None) -> list[str]:
    """The reasons a number of ``record`` in ``mode`` is flagged; none for a 0% cell (``accuracy``), where
    robustness cannot be overstated."""
    if accuracy is not None and accuracy <= 0:
        return []
    return [f"{flag.check}: {flag.reason}" for flag in record.flags(mode)]


def attack_settings(params: dict[str, Any]) -> str:
    """An attack's settings as ``steps=10, random_start=True`` (``defaults`` when it has none)."""
    return ", ".join(f"{key}={value}" for key, value in params.items()) or "defaults"


def setup_lines(summary: RunSummary, settings: bool = True) -> list[str]:
    """What was measured, one item per line: the model, the data, the threat model, the suite (with each attack's
    settings when ``settings``), the device and the versions. The report's header and the console's."""
    setup = summary.setup
    lines = []
    if setup is not None:
        model, data = setup.model, setup.data
        lines.append(f"model: {model.architecture} ({model.source}), {model.parameters:,} parameters, digest "
                     f"{model.digest}; normalisation: {model.normalization}"
                     + (f"; logits read from {model.output} outputs" if model.output != "tensor" else ""))
        split = f" ({data.split})" if data.split else ""
        lines.append(f"data: {data.name}{split}, {data.n} of {data.total} samples (seeded subset)"
                     if data.n < data.total else f"data: {data.name}{split}, {data.n} samples")
        lines[-1] += f", images {'x'.join(map(str, data.shape))}, {data.classes} classes"
    lines.append(f"threat model: {summary.norm}, ε = {', '.join(eps_label(k) for k in summary.eps_keys)}; "
                 f"seed {summary.seed}")
    attacks = [f"{a.label} ({attack_settings(a.params)})" if settings else a.label for a in summary.attacks]
    lines.append("suite: " + "; ".join(attacks) + (" (cascaded)" if summary.cascade else " (full grid)"))
    if setup is not None:
        versions = ", ".join(f"{name} {version}" for name, version in setup.versions.items() if version)
        lines.append(f"run: {setup.device}, {setup.precision}, chunks of {setup.batch_size}; started {setup.started}, "
                     f"{summary.time.attack_seconds:.1f} s of attacks; {versions}")
    return lines


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


class Header(Section):
    """The title, what was measured (model, data, threat model, suite, device, versions) and the warnings a
    reader must see before any number."""

    def blocks(self, context: ReportContext) -> list[Block]:
        summary = context.summary
        blocks: list[Block] = [Heading(TITLE, 1), Bullets(setup_lines(summary))]
        if summary.warnings:
            blocks += [Paragraph("**Check the setup before reading any number:**"),
                       Bullets(summary.warnings, flagged=True)]
        return blocks


class SummaryTable(Section):
    """What the numbers mean, and robust accuracy per defence and epsilon, flagged cells marked."""

    def blocks(self, context: ReportContext) -> list[Block]:
        summary = context.summary
        header = ["defence", "kind", "adaptive attack", "clean"]
        for key in summary.eps_keys:
            header += [f"ε={eps_label(key)} naive", f"ε={eps_label(key)} adaptive"]
        rows = []
        for record in summary.defenses:
            cells = [Cell(record.label, css="name"), Cell(record.kind, css="text"), Cell(record.view, css="text"),
                     Cell(with_interval(record.clean_accuracy, record.clean_interval))]
            for key in summary.eps_keys:
                entry = record.eps[key]
                cells += [Cell(with_interval(entry.accuracy(mode), entry.interval.get(mode)),
                               flag_reasons(record, mode, entry.accuracy(mode)))
                          for mode in MODES]
            rows.append(cells)
        intro = ("Robust accuracy "
                 "(%) is the worst case per sample over the whole suite; *naive* attacks the deployed model as is, "
                 "*adaptive* adds BPDA/EOT/defence-specific attacks. In brackets: the 95% confidence interval "
                 "(see *Confidence*). "
                 f"**{FLAG}** marks a number the gradient-masking checklist casts doubt on (the reasons are listed "
                 "below, and show on hover in the HTML report); a 0% cell is never marked: it cannot overstate "
                 "robustness.")
        return [Heading("Robust accuracy"), Paragraph(intro), Table(header, rows, id="summary")]


class Confidence(Section):
    """How sure each number is: the interval method, a randomised model's judging draws and majority-vote figures,
    and which differences are beyond the intervals."""

    def blocks(self, context: ReportContext) -> list[Block]:
        summary = context.summary
        items = []
        for record in summary.defenses:
            if record.judging_draws > 1:
                majority = ", ".join(f"ε={eps_label(key)}: {percent((record.eps[key].majority or {}).get('adaptive'))}"
                                     for key in summary.eps_keys)
                items.append(f"**{record.label}** is randomised: each clean and adversarial image was judged on "
                             f"{record.judging_draws} forwards (set from the measured variance of its prediction). "
                             "Its accuracies are *expected* accuracies: the mean over samples of the probability of "
                             "a correct answer at the sample's worst point (picked on half the draws, measured on "
                             f"the other half). Majority vote instead: clean {percent(record.clean_majority)}, "
                             f"adaptive {majority}. A single query of the model may do better or worse than "
                             "this average.")
        methods = sorted({record.interval_method for record in summary.defenses if record.interval_method})
        text = ("Every accuracy carries a 95% confidence interval over the sampled images: "
                + "; ".join(methods) + ". Two numbers whose intervals overlap may differ by sampling noise alone.")
        blocks: list[Block] = [Heading("Confidence"), Paragraph(text)]
        if items:
            blocks.append(Bullets(items))
        found = comparisons(summary)
        if found:
            blocks += [Paragraph("Differences against the intervals:"), Bullets(found)]
        return blocks


class Flags(Section):
    """Every failed check, with its reason."""

    def blocks(self, context: ReportContext) -> list[Block]:
        items = [f"**{record.label}** ({mode}) `{flag.check}`: {flag.reason}"
                 for record in context.summary.defenses for mode in MODES for flag in record.flags(mode)]
        if items:
            return [Heading("Flags"), Bullets(items, flagged=True)]
        found = diagnosis_findings(context.summary)
        if found:
            return [Heading("Flags"), Paragraph("No check failed, but the diagnosis found something before any attack "
                                                "(its remedies ran in the adaptive stage; see *Diagnosis*):"),
                    Bullets(found)]
        return [Heading("Flags"), Paragraph("No check failed, and the diagnosis found nothing.")]


def diagnosis_findings(summary: RunSummary) -> list[str]:
    """One line per diagnosis finding, with the remedy it chose: ``none: softmax_outputs (...) -> logits``."""
    lines = []
    for record in summary.defenses:
        if record.diagnosis is None:
            continue
        row = record.diagnosis
        remedies = "; ".join(f"{note.name} ({note.attack})" for note in row.remedies) or "no remedy needed"
        for finding in (f for f in row.diagnosis.findings if f.found):
            lines.append(f"{record.label}: {finding.check}: {finding.detail} -> {remedies}")
    return lines


class Detectors(Section):
    """Detection rates and the two ways of counting a detector's robust accuracy."""

    def blocks(self, context: ReportContext) -> list[Block]:
        detectors = [r for r in context.summary.defenses if r.detector is not None]
        if not detectors:
            return []
        rows = [[Cell(record.label, css="name"), Cell(eps_label(key)), Cell(percent(entry.detection_rate)),
                 Cell(percent(entry.correct_or_detected)), Cell(percent(entry.classifier_only))]
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
            reasons = [r for r in flag_reasons(record, "adaptive") if r.startswith("certificate")]
            for key, point in record.certified.at_eps.items():
                radius = "-" if point.radius is None else f"{point.radius:.3g}"
                rows.append([Cell(record.label, css="name"), Cell(eps_label(key)), Cell(radius), Cell(percent(point.certified)),
                             Cell(percent(point.naive)), Cell(percent(point.adaptive)),
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
            rows = [[Cell(eps_label(key)), Cell(a.stage, css="text"), Cell(a.attack, css="text"), Cell(a.access, css="text"),
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
        rows, idle = [], set()
        for record in summary.defenses:
            for key in summary.eps_keys:
                for attack, count in record.eps[key].broken_by.items():
                    if count > 0:
                        rows.append([Cell(record.label, css="name"), Cell(eps_label(key)), Cell(attack, css="text"),
                                     Cell(str(count))])
                    else:
                        idle.add(attack)
        broke = {row[2].text for row in rows}
        if not rows and not idle:
            return []
        intro = ("Every sample fooled counted once, under the first attack that fooled it (stages in order: naive, "
                 "black-box, adaptive; the suite's order within each). Only attacks that broke something are listed.")
        blocks: list[Block] = [Heading("Attack that broke it"), Paragraph(intro)]
        if rows:
            blocks.append(Table(["defence", "eps", "attack", "samples it broke first"], rows, id="broken-by"))
        never = sorted(idle - broke)
        if never:
            blocks.append(Paragraph("Broke nothing the attacks before them had not: " + ", ".join(never)
                                    + (" (at any ε, on any defence)." if rows else ".")))
        return blocks


SECTIONS: list[Section] = [Header(), SummaryTable(), Confidence(), Flags(), Diagnosis(), BrokenBy(), Detectors(), Certified(), Costs(),
                           Plots(), ExampleGrid(), AttackTables()]
