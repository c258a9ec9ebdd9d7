"""Documentation stays true: every hook documented, the README names the two commands, no placeholder
is left and every figure the defence docs quote is a measured one (bench/results/)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from shieldkit.plugins import hookspecs

REPO = Path(__file__).resolve().parents[2]


def _hooks():
    return [name for name, obj in inspect.getmembers(hookspecs, inspect.isfunction)
            if hasattr(obj, "shieldkit_spec")]


def test_every_hook_is_documented():
    hooks = _hooks()
    assert set(hooks) == {"register_attacks", "register_defenses", "register_models", "register_datasets",
                          "shieldkit_run_finished"}
    reference = (REPO / "docs" / "hooks.md").read_text()
    for hook in hooks:
        assert f"## {hook}" in reference, f"docs/hooks.md has no section for {hook}"
        assert getattr(hookspecs, hook).__doc__.strip(), f"{hook} has no docstring"


def test_hookspecs_hold_only_signatures_and_docstrings():
    for hook in _hooks():
        source = inspect.getsource(getattr(hookspecs, hook))
        body = source.split('"""')[-1].strip()
        assert body == "", f"{hook} has code in hookspecs.py: {body!r}"


def test_readme_names_the_two_commands_and_the_plugin():
    readme = (REPO / "README.md").read_text()
    for needle in ("make demo", "make test", "plugins/shieldkit-example", "docs/plugins.md"):
        assert needle in readme


def test_mkdocs_nav_points_at_existing_pages():
    nav = [line.split(":", 1)[1].strip() for line in (REPO / "mkdocs.yml").read_text().splitlines()
           if line.strip().startswith("- ") and line.strip().endswith(".md")]
    assert nav and all((REPO / "docs" / page).exists() for page in nav)


# ------------------------------------------------ documented figures are measured ones

# An ALL-CAPS stand-in for text still to be written: FIGURES_ADAPTIVE, FIGURE_ONEBIT, TODO, TBD, FIXME.
PLACEHOLDER = re.compile(r"\b(?:FIGURES?_[A-Z0-9_]+|TODO|TBD|FIXME)\b")
PERCENT = re.compile(r"-?\d+(?:\.\d+)?%")


def placeholders(text: str) -> list[str]:
    """The placeholder tokens in ``text``, in order."""
    return PLACEHOLDER.findall(text)


def figure_rows(markdown: str) -> list[tuple[str, tuple[str, ...]]]:
    """Each Markdown table row holding a percentage, with its percentages in order."""
    rows = []
    for line in markdown.splitlines():
        line = line.strip()
        if line.startswith("|") and (figures := tuple(PERCENT.findall(line))):
            rows.append((line, figures))
    return rows


def unmeasured_rows(documented: str, measured: list[str]) -> list[str]:
    """The table rows of ``documented`` whose percentages are not, in the same order, a row of ``measured``.

    Labels may be reworded in the docs (a row's first cell); its figures may not.
    """
    known = {figures for text in measured for _, figures in figure_rows(text)}
    return [line for line, figures in figure_rows(documented) if figures not in known]


def _documentation() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


# Which results file each section of docs/defenses.md quotes; every other section quotes defenses.md.
RESULTS_OF_SECTION = {"Randomised smoothing": "smoothing.md"}


def _results(name: str) -> str:
    return (REPO / "bench" / "results" / name).read_text()


def sections(markdown: str) -> dict[str, str]:
    """The text of each ``## `` section (the part before the first heading under "")."""
    parts = re.split(r"^## (.+)$", markdown, flags=re.MULTILINE)
    return {"": parts[0], **{title.strip(): text for title, text in zip(parts[1::2], parts[2::2])}}


def test_no_placeholder_is_left_in_the_docs():
    found = {str(page.relative_to(REPO)): placeholders(page.read_text()) for page in _documentation()}
    assert {page: tokens for page, tokens in found.items() if tokens} == {}


def test_every_figure_in_the_defence_tables_is_in_bench_results():
    documented = (REPO / "docs" / "defenses.md").read_text()
    assert len(figure_rows(documented)) >= 20, "docs/defenses.md should quote its measured tables"
    for title, text in sections(documented).items():
        results = RESULTS_OF_SECTION.get(title, "defenses.md")
        assert unmeasured_rows(text, [_results(results)]) == [], (
            f"docs/defenses.md, section {title!r}: rows not in bench/results/{results}; rerun or copy again")


def test_defence_figures_name_the_command_that_measured_them():
    results = (REPO / "bench" / "results" / "defenses.md").read_text()
    command = next(line.strip() for line in results.splitlines() if "bench/bench_defenses.py" in line)
    assert command in (REPO / "docs" / "defenses.md").read_text(), f"docs/defenses.md should say: {command}"


def test_the_checks_catch_a_placeholder_and_a_changed_figure():
    documented, measured = (REPO / "docs" / "defenses.md").read_text(), [_results("defenses.md")]
    row, figures = next((line, f) for line, f in figure_rows(documented) if line.startswith("| bit_depth"))
    assert placeholders(documented.replace(row, "FIGURES_ADAPTIVE")) == ["FIGURES_ADAPTIVE"]
    assert placeholders("about FIGURE_ONEBIT of them; TODO; TBD") == ["FIGURE_ONEBIT", "TODO", "TBD"]
    assert placeholders("FIGURESQUE figures, TODOS, ATBD") == []
    adaptive = sections(documented)["Attacking a defence adaptively"]
    assert unmeasured_rows(adaptive, measured) == []
    changed = row.replace(figures[0], "12.3%", 1)
    assert unmeasured_rows(adaptive.replace(row, changed), measured) == [changed]
    relabelled = row.replace("| bit_depth", "| bit depth, 4 bits", 1)
    assert unmeasured_rows(adaptive.replace(row, relabelled), measured) == []
    assert unmeasured_rows(sections(documented)["Randomised smoothing"], measured) != [], "the wrong file passes"
