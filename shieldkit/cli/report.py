"""``shieldkit report DIR``: rebuild a run's summary and reports from its folder (no model, no data)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="DIR", help="a run folder (what `shieldkit evaluate --out DIR` wrote)")


def run(args: argparse.Namespace) -> int:
    from shieldkit.evaluation.report import Report, rebuild_reports

    report = Report(args.run, rebuild_reports(args.run))
    print(report.table())
    print(f"\nrebuilt from plan.json and results.jsonl: {report.html_path}  (also report.md, summary.json)")
    return 0
