"""The evaluation report: the summary table, report.md and a self-contained report.html with plots.

report.html embeds its images as base64 PNGs and loads nothing else (no scripts,
no external styles), so it renders the same from a browser, a CI artefact or an
e-mail attachment. report.md links the same PNGs under ``plots/``.
"""

from __future__ import annotations

import base64
import html
import json
import logging
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

FLAG = "!"
#: The full grid's time is extrapolated, not measured: each unit's seconds per attacked sample times
#: the samples the full grid would attack. Smaller batches cost more per sample, so it overstates.
ESTIMATE_NOTE = "extrapolated per sample, an upper bound"


class Report:
    """What :func:`shieldkit.evaluate` returns: the summary and where everything was written.

    Attributes:
        out_dir: the run's folder.
        summary: the content of ``summary.json``.
    """

    def __init__(self, out_dir: str | Path, summary: dict[str, Any]):
        self.out_dir = Path(out_dir)
        self.summary = summary

    @classmethod
    def load(cls, out_dir: str | Path) -> Report:
        """The report of a finished run, from its ``summary.json``."""
        out_dir = Path(out_dir)
        return cls(out_dir, json.loads((out_dir / "summary.json").read_text()))

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
        return [d["label"] for d in self.summary["defenses"]]

    def _defense(self, defense: str) -> dict[str, Any]:
        for record in self.summary["defenses"]:
            if record["label"] == defense:
                return record
        raise KeyError(f"no defence {defense!r} in this report; it has {', '.join(self.defenses)}")

    def clean_accuracy(self, defense: str = "none") -> float:
        """Accuracy of the deployed model on the clean samples."""
        return self._defense(defense)["clean_accuracy"]

    def robust_accuracy(self, defense: str = "none", eps: float | None = None, mode: str = "adaptive") -> float:
        """Worst-case robust accuracy of ``defense`` at ``eps`` (the largest when ``None``).

        Args:
            mode: ``"adaptive"`` (worst case over the whole suite) or ``"naive"``
                (attacks on the deployed model only).
        """
        record = self._defense(defense)
        key = f"{max(self.summary['eps']) if eps is None else eps:g}"
        if key not in record["eps"]:
            raise KeyError(f"eps={eps} is not in this report; it has {', '.join(record['eps'])}")
        return record["eps"][key][mode]

    def flags(self, defense: str, mode: str | None = None) -> list[dict[str, Any]]:
        """Failed gradient-masking checks of ``defense`` (``mode``: naive, adaptive or both)."""
        record = self._defense(defense)
        modes = ("naive", "adaptive") if mode is None else (mode,)
        return [flag for m in modes for flag in record["flags"][m]]

    def table(self) -> str:
        return format_table(self.summary)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return f"Report(out_dir={str(self.out_dir)!r}, defenses={self.defenses}, eps={self.summary['eps']})"


# ------------------------------------------------------------------ text table


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def format_table(summary: dict[str, Any]) -> str:
    """The summary table printed at the end of a run (plain text)."""
    eps_keys = [f"{e:g}" for e in summary["eps"]]
    header = ["defence", "clean"] + [f"eps={k} naive/adaptive" for k in eps_keys]
    lines = []
    for record in summary["defenses"]:
        cells = [record["label"], _pct(record["clean_accuracy"])]
        naive_flag = FLAG if record["flags"]["naive"] else ""
        adaptive_flag = FLAG if record["flags"]["adaptive"] else ""
        for key in eps_keys:
            entry = record["eps"][key]
            cells.append(f"{_pct(entry['naive'])}{naive_flag} / {_pct(entry['adaptive'])}{adaptive_flag}")
        lines.append(cells)
    widths = [max(len(str(row[i])) for row in [header] + lines) for i in range(len(header))]
    render = lambda row: "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()  # noqa: E731
    out = [f"Robust accuracy (%) on {summary['n']} {summary['data']} samples, {summary['norm']} "
           "(worst case per sample over the suite)", render(header), render(["-" * w for w in widths])]
    out += [render(row) for row in lines]
    notes = []
    for record in summary["defenses"]:
        for mode in ("naive", "adaptive"):
            for flag in record["flags"][mode]:
                notes.append(f"  {FLAG} {record['label']} ({mode}) {flag['check']}: {flag['reason']}")
        if "detector" in record:
            rates = [record["eps"][k].get("detection_rate") for k in eps_keys]
            notes.append(f"  {record['label']}: detection rate at FPR {record['detector']['fpr_fitted']:g}: "
                         + ", ".join(f"eps={k}: {_pct(r)}%" for k, r in zip(eps_keys, rates))
                         + " (adaptive column = correct or detected)")
    if notes:
        out += ["", "Flags (gradient-masking checklist) and notes:"] + notes
    time = summary["time"]
    if summary["cascade"]:
        out.append(f"\nCascade: {time['attack_seconds']:.1f} s of attacks instead of ~"
                   f"{time['estimated_full_grid_seconds']:.1f} s for the full grid "
                   f"({100 * time['saved_share']:.0f}% saved; {ESTIMATE_NOTE})")
    else:
        out.append(f"\nFull grid: {time['attack_seconds']:.1f} s of attacks")
    return "\n".join(out)


# ---------------------------------------------------------------------- files


def write_reports(out_dir: Path, summary: dict[str, Any], data: Any, quiet: bool = True) -> None:
    """Write plots/*.png, report.md and report.html into ``out_dir``."""
    plots = out_dir / "plots"
    plots.mkdir(exist_ok=True)
    images: dict[str, Path] = {}
    try:
        from shieldkit.evaluate import plots as plotting

        images["robust_vs_eps"] = plotting.robust_vs_eps(summary, plots / "robust_vs_eps.png")
        images["naive_vs_adaptive"] = plotting.naive_vs_adaptive(summary, plots / "naive_vs_adaptive.png")
        grid = plotting.example_grid(summary, data, out_dir, plots / "examples.png")
        if grid is not None:
            images["examples"] = grid
    except ImportError as error:
        logger.warning("no plots in the report (%s); install shieldkit[report]", error)
    (out_dir / "report.md").write_text(render_markdown(summary, images, out_dir), encoding="utf-8")
    (out_dir / "report.html").write_text(render_html(summary, images), encoding="utf-8")


_CAPTIONS = {
    "robust_vs_eps": "Robust accuracy against epsilon per defence: naive (dashed) and adaptive (solid).",
    "naive_vs_adaptive": "Naive against adaptive robust accuracy at the largest epsilon.",
    "examples": "Examples at the largest epsilon: clean image, adversarial image of the first attack that "
                "fooled the deployed model, and the perturbation amplified to the full range.",
}


def _attack_rows(summary: dict[str, Any], record: dict[str, Any]) -> list[list[str]]:
    rows = []
    for key, entry in record["eps"].items():
        for attack in entry["attacks"]:
            rows.append([key, attack["stage"], attack["attack"], attack["access"], str(attack["attacked"]),
                         str(attack["fooled"]), f"{attack['seconds']:.2f}", str(attack["forwards"]),
                         str(attack["backwards"]), str(attack["errors"])])
    return rows


_ATTACK_HEADER = ["eps", "stage", "attack", "access", "attacked", "fooled", "seconds", "forwards", "backwards", "errors"]


def _main_rows(summary: dict[str, Any]) -> tuple[list[str], list[list[tuple[str, list[str]]]]]:
    """Header and cells; each cell carries the reasons of its flags."""
    eps_keys = [f"{e:g}" for e in summary["eps"]]
    header = ["defence", "kind", "adaptive attack", "clean"]
    for key in eps_keys:
        header += [f"ε={key} naive", f"ε={key} adaptive"]
    rows = []
    for record in summary["defenses"]:
        naive_reasons = [f"{f['check']}: {f['reason']}" for f in record["flags"]["naive"]]
        adaptive_reasons = [f"{f['check']}: {f['reason']}" for f in record["flags"]["adaptive"]]
        cells = [(record["label"], []), (record["kind"], []), (record["view"], []),
                 (_pct(record["clean_accuracy"]), [])]
        for key in eps_keys:
            cells.append((_pct(record["eps"][key]["naive"]), naive_reasons))
            cells.append((_pct(record["eps"][key]["adaptive"]), adaptive_reasons))
        rows.append(cells)
    return header, rows


def render_markdown(summary: dict[str, Any], images: dict[str, Path], out_dir: Path) -> str:
    header, rows = _main_rows(summary)
    lines = ["# shieldkit robustness report", "",
             f"{summary['n']} samples of `{summary['data']}`, norm {summary['norm']}, seed {summary['seed']}. "
             "Robust accuracy (%) is the worst case per sample over the whole suite; *naive* attacks the deployed "
             "model as is, *adaptive* adds BPDA/EOT/defence-specific attacks. "
             f"`{FLAG}` marks a number the gradient-masking checklist casts doubt on.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for cells in rows:
        lines.append("| " + " | ".join(text + (f" {FLAG}" if reasons else "") for text, reasons in cells) + " |")
    lines += ["", "## Flags", ""]
    flagged = False
    for record in summary["defenses"]:
        for mode in ("naive", "adaptive"):
            for flag in record["flags"][mode]:
                lines.append(f"- **{record['label']}** ({mode}) `{flag['check']}`: {flag['reason']}")
                flagged = True
    if not flagged:
        lines.append("No check failed.")
    detectors = [r for r in summary["defenses"] if "detector" in r]
    if detectors:
        lines += ["", "## Detectors", "", "| detector | eps | detection rate | correct or detected | classifier only |",
                  "|---|---|---|---|---|"]
        for record in detectors:
            for key, entry in record["eps"].items():
                lines.append(f"| {record['label']} | {key} | {_pct(entry.get('detection_rate'))} | "
                             f"{_pct(entry['correct_or_detected'])} | {_pct(entry['classifier_only'])} |")
    time = summary["time"]
    lines += ["", "## Cost", "",
              f"Attacks took {time['attack_seconds']:.1f} s; the full grid would have taken about "
              f"{time['estimated_full_grid_seconds']:.1f} s ({100 * time['saved_share']:.0f}% saved by the cascade; "
              f"{ESTIMATE_NOTE}).", ""]
    for name, path in images.items():
        lines += [f"![{_CAPTIONS[name]}]({path.relative_to(out_dir).as_posix()})", "", f"*{_CAPTIONS[name]}*", ""]
    lines += ["## Attacks per defence", ""]
    for record in summary["defenses"]:
        lines += [f"### {record['label']}", "", "| " + " | ".join(_ATTACK_HEADER) + " |", "|" + "---|" * len(_ATTACK_HEADER)]
        lines += ["| " + " | ".join(row) + " |" for row in _attack_rows(summary, record)]
        lines.append("")
    lines += ["Configuration: `config.json`; environment: `environment.json`; every unit: `results.jsonl`.", ""]
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


def render_html(summary: dict[str, Any], images: dict[str, Path]) -> str:
    esc = html.escape
    header, rows = _main_rows(summary)
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             '<link rel="icon" href="data:,">', "<title>shieldkit robustness report</title>",
             f"<style>{_STYLE}</style></head><body>", "<h1>shieldkit robustness report</h1>",
             f"<p>{summary['n']} samples of <code>{esc(summary['data'])}</code>, norm {esc(summary['norm'])}, "
             f"seed {summary['seed']}. Robust accuracy (%) is the worst case per sample over the whole suite; "
             "<em>naive</em> attacks the deployed model as is, <em>adaptive</em> adds BPDA/EOT/defence-specific "
             f"attacks. <span class=\"flag\">{FLAG}</span> marks a number the gradient-masking checklist casts doubt "
             "on (hover for the reason; all reasons are listed below).</p>",
             '<table id="summary"><thead><tr>' + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr></thead><tbody>"]
    for cells in rows:
        parts.append("<tr>")
        for position, (text, reasons) in enumerate(cells):
            css = "name" if position == 0 else "text" if position < 3 else ""
            if reasons:
                title = esc(" | ".join(reasons), quote=True)
                parts.append(f'<td class="flagged" title="{title}">{esc(text)} <span class="flag">{FLAG}</span></td>')
            else:
                parts.append(f'<td class="{css}">{esc(text)}</td>')
        parts.append("</tr>")
    parts.append("</tbody></table>")
    parts.append("<h2>Flags</h2><ul>")
    flagged = False
    for record in summary["defenses"]:
        for mode in ("naive", "adaptive"):
            for flag in record["flags"][mode]:
                flagged = True
                parts.append(f'<li class="flag-reason"><span class="flag">{FLAG}</span> <b>{esc(record["label"])}</b> '
                             f"({mode}) <code>{esc(flag['check'])}</code>: {esc(flag['reason'])}</li>")
    if not flagged:
        parts.append("<li>No check failed.</li>")
    parts.append("</ul>")
    detectors = [r for r in summary["defenses"] if "detector" in r]
    if detectors:
        parts.append("<h2>Detectors</h2><table><thead><tr><th>detector</th><th>eps</th><th>detection rate</th>"
                     "<th>correct or detected</th><th>classifier only</th></tr></thead><tbody>")
        for record in detectors:
            for key, entry in record["eps"].items():
                parts.append(f'<tr><td class="name">{esc(record["label"])}</td><td>{key}</td>'
                             f"<td>{_pct(entry.get('detection_rate'))}</td><td>{_pct(entry['correct_or_detected'])}</td>"
                             f"<td>{_pct(entry['classifier_only'])}</td></tr>")
        parts.append("</tbody></table>")
    time = summary["time"]
    parts.append(f"<h2>Cost</h2><p>Attacks took {time['attack_seconds']:.1f} s; the full grid would have taken "
                 f"about {time['estimated_full_grid_seconds']:.1f} s ({100 * time['saved_share']:.0f}% saved by "
                 f"the cascade; {ESTIMATE_NOTE}).</p>")
    for name, path in images.items():
        encoded = base64.b64encode(path.read_bytes()).decode("ascii")
        parts.append(f'<figure><img id="plot-{name}" alt="{esc(_CAPTIONS[name])}" '
                     f'src="data:image/png;base64,{encoded}"><figcaption>{esc(_CAPTIONS[name])}</figcaption></figure>')
    parts.append("<h2>Attacks per defence</h2>")
    for record in summary["defenses"]:
        parts.append(f"<h3>{esc(record['label'])}</h3><p>Adaptive target: {esc(record['view'])}.</p><table><thead><tr>"
                     + "".join(f"<th>{h}</th>" for h in _ATTACK_HEADER) + "</tr></thead><tbody>")
        for row in _attack_rows(summary, record):
            parts.append("<tr>" + "".join(f'<td class="{"text" if i in (1, 2, 3) else ""}">{esc(c)}</td>'
                                          for i, c in enumerate(row)) + "</tr>")
        parts.append("</tbody></table>")
    parts.append("<p>Configuration: <code>config.json</code>; environment: <code>environment.json</code>; "
                 "every unit of work: <code>results.jsonl</code>.</p></body></html>")
    return "\n".join(parts)


def load_examples(out_dir: Path, file: str) -> dict[str, Any]:
    return torch.load(out_dir / "examples" / file, map_location="cpu", weights_only=True)
