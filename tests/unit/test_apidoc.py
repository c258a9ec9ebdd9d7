"""docs/api.md is generated (tools/apidoc.py) and committed: it must be what the generator writes now."""

from __future__ import annotations

import re
from pathlib import Path

from support.tools import load_tool

apidoc = load_tool("apidoc")

PAGE = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def test_api_page_is_fresh():
    assert PAGE.read_text() == apidoc.render(), "docs/api.md is stale: python tools/apidoc.py > docs/api.md"


def test_api_page_reads_as_a_reference_without_the_directives():
    text = PAGE.read_text()
    readable = "\n".join(line for line in text.splitlines()
                         if not line.startswith(("::: ", "    ")) or line.startswith("    - `"))
    for name in ("create_attack(name, **params)", "run(model, x, y=None, *, target=None)",
                 "check_attack(name_or_attack", "ConformanceError", "effective_params()"):
        assert name in readable, name
    # each section lists what its directives render, so the repository view misses no documented object
    for section in apidoc.SECTIONS:
        for dotted in section.names:
            assert f"`{dotted.rpartition('.')[2]}" in readable, dotted


def test_summaries_carry_no_rest_markup():
    text = PAGE.read_text()
    assert "``" not in text and not re.search(r":(func|class|meth|attr):`", text)
