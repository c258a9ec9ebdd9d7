"""Results that plug into users' tools: strict JSON, summary.csv/results.csv, Report.to_frame, `shieldkit
compare`, one folder per run by default, and the plugins' shieldkit_run_finished hook.

Tiny runs: a linear model on 16 of the bundled digits, FGSM only, no masking checklist: seconds each.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch
from torch import nn

import shieldkit as sk
from shieldkit.cli import main
from shieldkit.evaluation import exports
from shieldkit.evaluation.records import NONFINITE, eps_key
from shieldkit.evaluation.report import Report, rebuild_reports
from shieldkit.evaluation.results import LATEST
from tests.support.needs import need
from tests.support.run_folders import assert_rebuilds_from_disk


def reject(constant: str):
    raise ValueError(f"not strict JSON: {constant}")


def strict_loads(text: str):
    """``json.loads`` as Node's ``JSON.parse`` reads: ``Infinity``, ``-Infinity`` and ``NaN`` are errors."""
    return json.loads(text, parse_constant=reject)


class _Reversed(torch.autograd.Function):
    """The identity forward, the negated gradient backward: the loss moves against its first-order prediction."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return -grad


class ReversedGradient(nn.Module):
    """A linear classifier whose input gradient points the wrong way: the diagnosis measures its shattered
    gradients' disagreement as infinite (an ``inf`` in results.jsonl and summary.json)."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(28 * 28, 10)

    def forward(self, x):
        return self.linear(_Reversed.apply(x).flatten(1))


def linear(seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10)).eval()


def tiny_run(model, data, out, **options):
    settings = {"attacks": ["fgsm"], "eps": [0.1], "n": 16, "checks": False, "quiet": True, **options}
    return sk.evaluate(model, data, out_dir=out, **settings)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, digits):
    """Three finished runs: one whose records hold an infinity, one with two defences and two budgets, and a
    second model on the same grid."""
    root = tmp_path_factory.mktemp("runs")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        reversed_model = ReversedGradient().eval()
    infinite = tiny_run(reversed_model, digits[0], root / "infinite", adaptive=False)
    grid = tiny_run(linear(0), digits[0], root / "grid", defenses=["none", "bit_depth"], eps=[0.1, 0.2])
    other = tiny_run(linear(1), digits[0], root / "other", defenses=["none", "bit_depth"], eps=[0.1, 0.2])
    return types.SimpleNamespace(root=root, infinite=infinite, grid=grid, other=other)


def json_files(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*.json*") if p.is_file())


# ------------------------------------------------------------------------------------------ strict JSON


def test_every_json_file_a_run_writes_is_strict_and_its_infinity_comes_back(runs, tmp_path):
    out = runs.infinite.out_dir
    names = {p.name for p in json_files(out)}
    assert {"results.jsonl", "summary.json", "plan.json", "config.json", "environment.json"} <= names
    for path in json_files(out):
        lines = path.read_text().splitlines() if path.suffix == ".jsonl" else [path.read_text()]
        for line in lines:
            strict_loads(line)  # raises on Infinity or NaN
    # the run did measure an infinity (the reversed gradient's disagreement): written as null + why
    summary = strict_loads((out / "summary.json").read_text())
    finding = next(f for f in summary["defenses"][0]["diagnosis"]["diagnosis"]["findings"]
                   if f["check"] == "shattered_gradients")
    assert finding["measured"] is None and finding[f"measured{NONFINITE}"] == "inf"
    assert f'"measured{NONFINITE}":"inf"' in (out / "results.jsonl").read_text()
    # ... and read back exactly
    loaded = Report.load(out).run.defense("none").diagnosis.diagnosis.finding("shattered_gradients")
    assert loaded.measured == math.inf
    assert_rebuilds_from_disk(out, tmp_path)  # summary.json comes back byte for byte from the strict rows


def test_rows_written_with_infinity_rebuild_into_strict_json_and_csv(runs, tmp_path):
    """A run folder written before (Infinity in results.jsonl) rebuilds into strict files; the CSV says inf."""
    out = tmp_path / "old"
    shutil.copytree(runs.grid.out_dir, out)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    attack = next(row for row in rows if row["type"] == "attack")
    attack["seconds"] = math.inf
    (out / "results.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert "Infinity" in (out / "results.jsonl").read_text()
    summary = rebuild_reports(out)
    strict_loads((out / "summary.json").read_text())
    stats = next(a for a in summary.defense(attack["defense"]).eps[eps_key(attack["eps"])].attacks
                 if a.attack == attack["attack"] and a.stage == attack["stage"])
    assert stats.seconds == math.inf
    table = list(csv.DictReader((out / "results.csv").open()))
    assert next(r for r in table if r["key"] == attack["key"])["seconds"] == "inf"
    assert any(r["attack_seconds"] == "inf" for r in csv.DictReader((out / "summary.csv").open()))


# ----------------------------------------------------------------------------------------------- CSV


def test_summary_csv_has_a_row_per_defence_eps_and_mode_agreeing_with_summary_json(runs):
    out = runs.grid.out_dir
    summary = json.loads((out / "summary.json").read_text())
    table = list(csv.DictReader((out / "summary.csv").open(encoding="utf-8")))
    assert list(table[0]) == [name for name, _, _ in exports.SUMMARY_COLUMNS]
    assert len(table) == 2 * 2 * 2  # defences x eps x modes
    for row in table:
        defense = next(d for d in summary["defenses"] if d["label"] == row["defense"])
        entry = defense["eps"][eps_key(float(row["eps"]))]
        mode = row["mode"]
        assert row["eps_label"] == {"0.1": "0.1", "0.2": "0.2"}[row["eps"]]
        assert (row["data"], int(row["n"]), row["norm"]) == (summary["data"], summary["n"], summary["norm"])
        assert float(row["clean_accuracy"]) == defense["clean_accuracy"]  # fractions, exactly
        assert [float(row["clean_low"]), float(row["clean_high"])] == defense["clean_interval"]
        assert float(row["robust_accuracy"]) == entry[mode] <= 1
        assert [float(row["robust_low"]), float(row["robust_high"])] == entry["interval"][mode]
        stages = exports.MODE_STAGES[mode]
        ran = [a for a in entry["attacks"] if a["stage"] in stages]
        assert int(row["attacks_run"]) == len(ran)
        assert float(row["attack_seconds"]) == pytest.approx(sum(a["seconds"] for a in ran))
        assert int(row["forwards"]) == sum(a["forwards"] for a in ran)
        broken = int(row["broken"])
        robust = round(entry[mode] * summary["n"])
        assert broken == entry["clean_correct"] - robust  # every clean-correct sample is robust or broken once
        if broken:
            assert int(row["top_attack_broken"]) == max(entry["broken_by"].values())
    adaptive = [r for r in table if r["defense"] == "bit_depth" and r["mode"] == "adaptive"]
    assert {r["attacks"] for r in adaptive} == {"fgsm;fgsm (adaptive)"}


def test_results_csv_has_a_row_per_clean_and_attack_row(runs):
    out = runs.grid.out_dir
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    measured = [row for row in rows if row["type"] in ("clean", "attack")]
    table = list(csv.DictReader((out / "results.csv").open(encoding="utf-8")))
    assert list(table[0]) == [name for name, _, _ in exports.RESULTS_COLUMNS]
    assert [r["key"] for r in table] == [row["key"] for row in measured]
    for row, line in zip(measured, table):
        assert (line["type"], line["defense"]) == (row["type"], row["defense"])
        assert (int(line["chunk_start"]), int(line["chunk_end"])) == tuple(row["chunk"])
        if row["type"] == "attack":
            assert float(line["eps"]) == row["eps"] and line["stage"] == row["stage"]
            assert (line["attack"], line["attack_name"]) == (row["attack"], row["name"])
            assert int(line["attacked"]) == len(row["attacked"]) and int(line["fooled"]) == len(row["fooled"])
            assert float(line["seconds"]) == row["seconds"]
            assert [int(line[k]) for k in ("forwards", "backwards", "queries")] == [
                row["forwards"], row["backwards"], row["queries"]]
            assert line["error"] == (row["error"] or "")
        else:
            assert line["eps"] == "" and int(line["correct"]) == len(row["correct"])


def test_the_report_and_its_numbers_are_fractions(runs):
    report = runs.grid
    assert 0 <= report.robust_accuracy("none") <= report.clean_accuracy("none") <= 1
    table = {(r["defense"], r["eps"], r["mode"]): r for r in csv.DictReader((report.out_dir / "summary.csv").open())}
    assert float(table[("none", "0.2", "adaptive")]["robust_accuracy"]) == report.robust_accuracy("none", 0.2)
    low, high = report.robust_interval("none", 0.2)
    assert (float(table[("none", "0.2", "adaptive")]["robust_low"]), float(table[("none", "0.2", "adaptive")]
                                                                            ["robust_high"])) == (low, high)
    for method in (Report.robust_accuracy, Report.clean_accuracy, Report.robust_interval):
        assert "fraction" in method.__doc__


# ------------------------------------------------------------------------------------------ DataFrame


def test_to_frame_equals_summary_csv(runs):
    pandas = need("pandas", "pip install 'shieldkit[frames]'")
    for report in (runs.grid, runs.infinite):
        frame = report.to_frame()
        assert list(frame.columns) == [name for name, _, _ in exports.SUMMARY_COLUMNS]
        pandas.testing.assert_frame_equal(frame, exports.read_frame(report.out_dir / "summary.csv"))
        rows = list(csv.DictReader((report.out_dir / "summary.csv").open()))
        assert len(frame) == len(rows)
        for (_, record), row in zip(frame.iterrows(), rows):
            for name, kind, _ in exports.SUMMARY_COLUMNS:
                if kind == "str":
                    assert record[name] == row[name], name
                elif row[name] == "":
                    assert math.isnan(record[name]), name
                else:
                    assert float(record[name]) == float(row[name]), name


def test_to_frame_without_pandas_is_one_line_naming_the_install(runs, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas raises ImportError
    with pytest.raises(ImportError) as caught:
        runs.grid.to_frame()
    message = str(caught.value)
    assert "\n" not in message and "pip install pandas" in message and "shieldkit[frames]" in message


# -------------------------------------------------------------------------------------------- compare


def test_compare_prints_a_leaderboard_of_both_runs(runs, capsys, tmp_path):
    first, second = runs.grid.out_dir, runs.other.out_dir
    assert main(["compare", str(first), str(second)]) == 0
    markdown = capsys.readouterr().out
    lines = [line for line in markdown.splitlines() if line.startswith("| ") and "---" not in line]
    assert lines[0].startswith("| # | model | digest | data | n | norm | ε | defence | clean % | robust % [95% CI]")
    assert len(lines) == 1 + 4  # two runs x two defences
    assert sum(str(first) in line for line in lines) == 2 and sum(str(second) in line for line in lines) == 2
    assert all(" 0.2 " in line for line in lines[1:])  # the largest eps

    assert main(["compare", "--csv", str(first), str(second)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 4 and {r["run"] for r in rows} == {str(first), str(second)}
    robust = [float(r["robust_accuracy"]) for r in rows]
    assert robust == sorted(robust, reverse=True) and [int(r["rank"]) for r in rows] == [1, 2, 3, 4]
    for row in rows:
        report = runs.grid if row["run"] == str(first) else runs.other
        assert float(row["robust_accuracy"]) == report.robust_accuracy(row["defense"], 0.2)  # a fraction
        assert float(row["clean_accuracy"]) == report.clean_accuracy(row["defense"])
        assert (row["eps_label"], row["suite"], row["data"], row["n"]) == ("0.2", "fgsm", "digits", "16")
        assert row["model_digest"] == json.loads((Path(row["run"]) / "config.json").read_text())["config"][
            "model_digest"]

    target = tmp_path / "board.md"
    assert main(["compare", str(first), str(second), "--out", str(target)]) == 0
    assert target.read_text() == markdown


def test_compare_refuses_a_folder_that_is_not_a_finished_run_in_one_line(runs, tmp_path, capsys):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(runs.grid.out_dir, unfinished)
    (unfinished / "summary.json").unlink()
    for folder, says in ((unfinished, "not a finished run"), (tmp_path / "missing", "not a folder"),
                         (tmp_path, "not a shieldkit run")):
        capsys.readouterr()
        assert main(["compare", str(runs.grid.out_dir), str(folder)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("shieldkit compare: error:") and says in err, err


# ------------------------------------------------------------------------------ one folder per run


def test_the_default_folder_gets_a_new_sub_folder_per_run_and_resume_takes_the_latest(digits, tmp_path,
                                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = tmp_path / "shieldkit-runs" / "evaluate"
    first = tiny_run(linear(0), digits[0], None)
    second = tiny_run(linear(0), digits[0], None)
    assert first.out_dir.parent.resolve() == second.out_dir.parent.resolve() == base.resolve()
    assert first.out_dir != second.out_dir and (first.out_dir / "summary.json").is_file()
    assert sorted(p.name for p in base.iterdir() if p.is_dir() and not p.is_symlink()) == sorted(
        [first.out_dir.name, second.out_dir.name])
    if (base / LATEST).is_symlink():  # where the system has symbolic links
        assert (base / LATEST).resolve() == second.out_dir.resolve()
    rows = (second.out_dir / "results.jsonl").read_text()
    resumed = tiny_run(linear(0), digits[0], None, resume=True)
    assert resumed.out_dir.resolve() == second.out_dir.resolve()
    assert (second.out_dir / "results.jsonl").read_text() == rows  # every unit was already done
    assert resumed.robust_accuracy() == second.robust_accuracy()
    assert len([p for p in base.iterdir() if p.is_dir() and not p.is_symlink()]) == 2


def test_the_command_without_out_writes_a_new_sub_folder_and_resume_continues_it(digits_mlp, tmp_path,
                                                                                monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    command = ["evaluate", "--model", digits_mlp.saved_path, "--data", "digits", "--attacks", "fgsm", "--eps",
               "0.1", "--n", "16", "--quiet"]
    assert main(command) == 0
    base = tmp_path / "shieldkit-runs" / "evaluate"
    (run,) = [p for p in base.iterdir() if p.is_dir() and not p.is_symlink()]
    assert run.name in capsys.readouterr().out  # where the report is
    for name in ("summary.json", "summary.csv", "results.csv", "report.html"):
        assert (run / name).is_file(), name
    rows = (run / "results.jsonl").read_text()
    assert main([*command, "--resume"]) == 0
    assert [p for p in base.iterdir() if p.is_dir() and not p.is_symlink()] == [run]
    assert (run / "results.jsonl").read_text() == rows  # every unit was already done


# ------------------------------------------------------------------------------------ the tracker hook


def test_the_hook_is_called_once_per_finished_run_with_summary_json(digits, tmp_path, fresh_registry):
    calls = []

    class Tracker:
        @sk.hookimpl
        def shieldkit_run_finished(self, summary, out_dir):
            calls.append((summary, out_dir))

    class Broken:
        @sk.hookimpl
        def shieldkit_run_finished(self, out_dir):
            raise RuntimeError("tracker offline")

    sk.register_plugin(Tracker(), "tracker")
    broken = sk.register_plugin(Broken(), "broken_tracker")
    report = tiny_run(linear(0), digits[0], tmp_path / "run")
    assert len(calls) == 1
    summary, out_dir = calls[0]
    assert out_dir == report.out_dir and isinstance(out_dir, Path)
    assert summary == strict_loads((report.out_dir / "summary.json").read_text()) == report.summary
    assert broken.status == "failed" and "tracker offline" in broken.errors[0]  # recorded; the run finished
    rebuild_reports(report.out_dir)  # a rebuild is not a finished run
    assert main(["report", str(report.out_dir)]) == 0
    assert len(calls) == 1
    tiny_run(linear(0), digits[0], tmp_path / "again")
    assert len(calls) == 2


def test_the_example_plugin_appends_one_line_per_run(digits, tmp_path, fresh_registry, monkeypatch):
    """In-process; tests/e2e/test_entry_points.py installs the plugin in a fresh environment and runs the command."""
    example = need("shieldkit_example", "pip install ./plugins/shieldkit-example (make plugin)")
    target = tmp_path / "runs.csv"
    monkeypatch.setenv(example.RUNS_CSV, str(target))
    if not any(p.name == "example" and p.status == "ok" for p in sk.list_plugins()):  # not installed here
        sk.register_plugin(example, "example")
    first = tiny_run(linear(0), digits[0], tmp_path / "a", eps=[0.1, 0.2])
    tiny_run(linear(1), digits[0], tmp_path / "b")
    rows = list(csv.DictReader(target.open()))
    assert [r["run"] for r in rows] == [str(tmp_path / "a"), str(tmp_path / "b")]
    assert rows[0]["eps"] == "0.2" and float(rows[0]["robust_accuracy"]) == first.robust_accuracy("none", 0.2)
    assert not os.path.exists(tmp_path / "shieldkit-runs.csv")
