"""`make test` runs every test `.ci/run` runs, and nothing is skipped: a missing dependency fails its test.

The only tests not run by `make test` are those marked `slow` (deselected in pyproject.toml's addopts).
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TEST_DIRS = [REPO / "tests", *sorted((REPO / "plugins").glob("*/tests"))]
SKIPPING = re.compile(r"pytest\.(skip|importorskip)\(|mark\.(skip|skipif)\b|unittest\.skip")


def test_no_test_can_skip_itself():
    offenders = [f"{path.relative_to(REPO)}:{number}: {line.strip()}"
                 for folder in TEST_DIRS for path in folder.rglob("*.py") if path.name != Path(__file__).name
                 for number, line in enumerate(path.read_text().splitlines(), 1) if SKIPPING.search(line)]
    assert not offenders, "use tests/support/needs.py (fail, saying what to install) instead of skipping:\n" + "\n".join(offenders)


def test_ci_runs_make_test_and_make_test_runs_every_test_folder():
    ci = (REPO / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.MULTILINE), ".ci/run must call `make test` and nothing else of substance"
    makefile = (REPO / "Makefile").read_text()
    recipe = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "browser" in recipe.splitlines()[0], "make test must install the browser the report tests need"
    for folder in TEST_DIRS:
        assert str(folder.relative_to(REPO)) in recipe, f"make test does not run {folder.relative_to(REPO)}"


def test_the_checker_catches_a_skip():
    assert SKIPPING.search('    pytest.skip("no GPU")') and SKIPPING.search("playwright = pytest.importorskip('x')")
    assert SKIPPING.search("@pytest.mark.skipif(True, reason='')") and not SKIPPING.search("pytest.fail('missing')")
