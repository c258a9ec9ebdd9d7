"""The report's two writers: the blocks of :mod:`~shieldkit.evaluation.sections` as Markdown and as HTML.

report.html embeds its images as base64 PNGs and loads nothing else (no scripts,
no external styles), so it renders the same from a browser, a CI artefact or an
e-mail attachment. report.md links the same PNGs under ``plots/``.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from shieldkit.evaluation.sections import (
    FLAG,
    TITLE,
    Block,
    Bullets,
    Cell,
    Figure,
    Heading,
    Paragraph,
    Table,
)


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
