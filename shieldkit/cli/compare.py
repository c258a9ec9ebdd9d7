"""``shieldkit compare RUN_DIR...``: finished runs side by side, as a leaderboard (RobustBench's rows).

One row per run and defence: the model (its name, file or factory, and class), its digest, the data and the
samples evaluated, the norm and the run's largest ε, clean accuracy, robust accuracy with its 95% interval
(adaptive mode: the worst case over the whole suite), the suite and the attack time; sorted by robust
accuracy, best first. It reads each folder's ``summary.json``, ``plan.json`` and ``config.json`` and rebuilds
nothing; a folder that is not a finished run is refused in one line. A folder holding run sub-folders (the
default ``shieldkit-runs/evaluate``) stands for its finished runs.

Markdown by default (percentages, for people); ``--csv`` writes CSV (fractions in [0, 1], for tools).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

from shieldkit.core.errors import InvalidInputError

INTERMIXED = True

#: the CSV's columns (accuracies are fractions in [0, 1])
COLUMNS = ("rank", "model", "architecture", "model_digest", "data", "n", "norm", "eps", "eps_label", "defense",
           "clean_accuracy", "robust_accuracy", "robust_low", "robust_high", "suite", "attack_seconds", "run")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Compare finished runs: one leaderboard row per run and defence (model, data, norm, "
                          "eps, clean and robust accuracy with its 95% interval, suite, time), best robust "
                          "accuracy first. Markdown by default; --csv for CSV.")
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR",
                        help="run folders (what `shieldkit evaluate --out DIR` wrote), or a folder of runs such as "
                             "shieldkit-runs/evaluate")
    parser.add_argument("--csv", action="store_true", help="write CSV (accuracies as fractions in [0, 1]) instead "
                                                           "of a Markdown table (percentages)")
    parser.add_argument("--out", metavar="FILE", help="write the table to FILE (default: none, printed on stdout)")


def run(args: argparse.Namespace) -> int:
    folders = []
    for given in args.runs:
        folders += _runs_of(Path(given))
    seen, rows = set(), []
    for folder in folders:
        if folder.resolve() in seen:  # a run named twice, or through the default folder's `latest` link
            continue
        seen.add(folder.resolve())
        rows += leaderboard_rows(folder)
    rows.sort(key=lambda row: (-row["robust_accuracy"], -row["clean_accuracy"]))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    text = csv_table(rows) if args.csv else markdown_table(rows)
    if args.out:
        try:
            Path(args.out).write_text(text, encoding="utf-8")
        except OSError as error:
            raise InvalidInputError(f"--out: cannot write {args.out!r}: {error.strerror or error}") from None
        print(f"{len(rows)} rows written to {args.out}")
    else:
        sys.stdout.write(text)
    return 0


def _runs_of(folder: Path) -> list[Path]:
    """``folder`` itself, or, when it is no run but holds runs (the default folder), its finished runs."""
    from shieldkit.evaluation.results import CONFIG

    if folder.is_dir() and not (folder / CONFIG).is_file():
        inside = sorted(p for p in folder.iterdir() if p.is_dir() and (p / CONFIG).is_file())
        finished, skipped = [], []
        for path in inside:
            try:
                check_finished(path)
            except InvalidInputError as error:
                skipped.append(str(error))
                continue
            finished.append(path)
        if not finished:
            raise InvalidInputError(f"{str(folder)!r} is not a shieldkit run (no {CONFIG}) and holds no finished run")
        for reason in skipped:
            print(f"shieldkit compare: skipping {reason}", file=sys.stderr)
        return finished
    check_finished(folder)
    return [folder]


def check_finished(folder: Path) -> None:
    """Refuse, in one line, a folder that is not a finished run."""
    from shieldkit.evaluation.results import CONFIG, MANIFEST

    if not folder.is_dir():
        raise InvalidInputError(f"{str(folder)!r} is not a folder")
    if not (folder / CONFIG).is_file():
        raise InvalidInputError(f"{str(folder)!r} is not a shieldkit run (no {CONFIG})")
    if _in_progress(folder):
        raise InvalidInputError(f"{str(folder)!r} is a run still in progress")
    for name in (MANIFEST, "summary.json"):
        if not (folder / name).is_file():
            raise InvalidInputError(f"{str(folder)!r} is not a finished run (no {name}; `shieldkit report "
                                    f"{folder}` summarises what it finished)")
    config, summary = _json(folder / CONFIG), _json(folder / "summary.json")
    if summary.get("config_hash") != config.get("hash"):
        raise InvalidInputError(f"{str(folder)!r}: its summary.json is not its config.json's run (another "
                                f"configuration hash); run `shieldkit report {folder}`")


def _in_progress(folder: Path) -> bool:
    """Whether a run holds the folder's lock now (read only: the lock file is not written)."""
    from shieldkit.evaluation.results import LOCK

    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock is taken either
        return False
    try:
        handle = (folder / LOCK).open("r")
    except OSError:
        return False
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return False


def _json(path: Path) -> dict[str, Any]:
    from shieldkit.evaluation.records import restore_nonfinite

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InvalidInputError(f"cannot read {path}: {error}") from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"{path} is not a shieldkit record")
    return restore_nonfinite(data)


def leaderboard_rows(folder: Path) -> list[dict[str, Any]]:
    """The leaderboard rows of one finished run: one per defence, at the run's largest ε, adaptive mode."""
    from shieldkit.core.threat import format_eps
    from shieldkit.evaluation.records import RESULTS_FORMAT, eps_key
    from shieldkit.evaluation.results import CONFIG

    check_finished(folder)
    config, summary = _json(folder / CONFIG), _json(folder / "summary.json")
    if summary.get("format") != RESULTS_FORMAT:
        raise InvalidInputError(f"{str(folder)!r} holds results format {summary.get('format')}; this shieldkit "
                                f"reads format {RESULTS_FORMAT}")
    identity = config.get("config", {})
    setup = (summary.get("setup") or {}).get("model") or {}
    try:
        eps = max(float(e) for e in summary["eps"])
        rows = []
        for defense in summary["defenses"]:
            entry = defense["eps"][eps_key(eps)]
            low, high = entry.get("interval", {}).get("adaptive", (None, None))
            rows.append({
                "rank": 0, "model": _model(identity.get("model") or {}, setup),
                "architecture": setup.get("architecture", ""),
                "model_digest": identity.get("model_digest", setup.get("digest", "")),
                "data": summary["data"], "n": summary["n"], "norm": summary["norm"], "eps": eps,
                "eps_label": format_eps(eps), "defense": defense["label"],
                "clean_accuracy": defense["clean_accuracy"], "robust_accuracy": entry["adaptive"],
                "robust_low": low, "robust_high": high, "suite": _suite(identity, summary),
                "attack_seconds": defense.get("seconds", 0.0), "run": str(folder),
            })
    except (KeyError, TypeError, ValueError) as error:
        raise InvalidInputError(f"{folder / 'summary.json'} is not a shieldkit summary ({error!r} missing)") from None
    return rows


def _model(spec: dict[str, Any], setup: dict[str, Any]) -> str:
    """How the run named its model: a registered name, a file's name, a factory, or a Python object."""
    if "name" in spec:
        return str(spec["name"])
    if "path" in spec:
        return Path(str(spec["path"])).name
    if "factory" in spec:
        return str(spec["factory"])
    return str(setup.get("source") or "Python object")


def _suite(identity: dict[str, Any], summary: dict[str, Any]) -> str:
    """The preset's name when the run's attacks are the preset's (those of the grid's norm), else their labels."""
    from shieldkit.evaluation.presets import suite_attacks

    ran = [(str(a.get("name", "")).split(".")[0], a.get("params") or {}) for a in identity.get("attacks") or []]
    try:
        if ran == suite_attacks(identity.get("suite", ""), summary.get("norm", "")):
            return str(identity["suite"])
    except Exception:  # noqa: BLE001 - a suite this shieldkit does not know: the attacks are named instead
        pass
    return ", ".join(str(a.get("label", "")) for a in summary.get("attacks", []))


# ---------------------------------------------------------------------------- tables


def csv_table(rows: list[dict[str, Any]]) -> str:
    """The leaderboard as CSV: fractions in [0, 1], an empty cell where there is no value."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(["" if row[name] is None else row[name] for name in COLUMNS])
    return buffer.getvalue()


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The leaderboard as a Markdown table: percentages, robust accuracy with its 95% interval."""
    from shieldkit.evaluation.sections import percent, with_interval

    header = ["#", "model", "digest", "data", "n", "norm", "ε", "defence", "clean %", "robust % [95% CI]",
              "suite", "attack time (s)", "run"]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    for row in rows:
        interval = None if row["robust_low"] is None else (row["robust_low"], row["robust_high"])
        model = row["model"] + (f" ({row['architecture']})" if row["architecture"] else "")
        cells = [row["rank"], model, row["model_digest"], row["data"], row["n"], row["norm"], row["eps_label"],
                 row["defense"], percent(row["clean_accuracy"]), with_interval(row["robust_accuracy"], interval),
                 row["suite"], f"{row['attack_seconds']:.1f}", row["run"]]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"
