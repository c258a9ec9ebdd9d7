"""A check several evaluation tests share: a finished run's summary and reports rebuild from its folder alone."""

from __future__ import annotations

import shutil
from pathlib import Path

from shieldkit.cli import main


def assert_rebuilds_from_disk(out: Path, tmp_path: Path) -> None:
    """Copy the run folder, delete its summary, reports and plots, and rebuild them with ``shieldkit report``
    (no model, no data): summary.json must come back byte for byte and report.md line for line."""
    copy = tmp_path / f"rebuilt-{Path(out).name}"
    shutil.copytree(out, copy)
    for name in ("summary.json", "report.md", "report.html"):
        (copy / name).unlink()
    shutil.rmtree(copy / "plots", ignore_errors=True)
    assert main(["report", str(copy)]) == 0
    assert (copy / "summary.json").read_bytes() == (Path(out) / "summary.json").read_bytes()
    assert (copy / "report.md").read_text() == (Path(out) / "report.md").read_text()
    assert (copy / "report.html").is_file()
