"""The evaluation's structure: typed records and their JSON form, report sections, format versions, one PGD,
declared adaptive capabilities, and one construction path for registered components."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from support.run_folders import assert_rebuilds_from_disk
from torch import nn

import shieldkit as sk
from shieldkit.cli import main
from shieldkit.core.defense import TransformDefense
from shieldkit.core.errors import InvalidParameterError
from shieldkit.evaluation import Report, evaluate
from shieldkit.evaluation import report as report_module
from shieldkit.evaluation import sections as sections_module
from shieldkit.evaluation.adaptive import plan_defense
from shieldkit.evaluation.config import EvalConfig
from shieldkit.evaluation.records import (
    RESULTS_FORMAT,
    AttackRow,
    GradientRow,
    LargeEpsRow,
    from_json,
    row_from_json,
    to_json,
)
from shieldkit.evaluation.report import rebuild_reports
from shieldkit.evaluation.results import read_rows
from shieldkit.evaluation.suite import resolve_suite
from shieldkit.evaluation.summaries import RunSummary


@pytest.fixture(scope="module")
def small_run(digits_mlp, digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    report = evaluate(digits_mlp, digits[0], attacks=["fgsm", ("pgd", {"steps": 3}), "noise"],
                      defenses=["none", "bit_depth"], eps=[0.1, 0.3], n=40, batch_size=20, out_dir=out, quiet=True)
    return out, report


def test_every_row_and_the_summary_round_trip_through_their_json_form(small_run):
    out, report = small_run
    lines = read_rows(out)
    rows = [row_from_json(line) for line in lines]
    assert {type(r).__name__ for r in rows} >= {"CleanRow", "AttackRow", "RandomnessRow", "GradientRow", "LargeEpsRow"}
    assert [to_json(r) for r in rows] == lines  # nothing lost or renamed between the file and the records
    gradient = next(r for r in rows if isinstance(r, GradientRow))
    assert gradient.mode in ("naive", "adaptive") and to_json(gradient)["check"] == f"gradients|{gradient.mode}"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["format"] == RESULTS_FORMAT
    assert to_json(from_json(RunSummary, summary)) == summary
    loaded = Report.load(out)
    assert loaded.robust_accuracy("bit_depth", 0.3, "naive") == report.robust_accuracy("bit_depth", 0.3, "naive")
    assert loaded.flags("bit_depth") == report.flags("bit_depth") != []  # bit depth masks gradients: flagged


def test_a_run_folder_rebuilds_its_summary_and_reports_with_no_model(small_run, tmp_path, capsys):
    out, _ = small_run
    assert_rebuilds_from_disk(out, tmp_path)
    printed = capsys.readouterr().out
    assert "bit_depth" in printed and "rebuilt from plan.json and results.jsonl" in printed


def test_a_half_finished_run_reports_what_it_has(small_run, tmp_path):
    """Rows cut off half way (a killed run, plus a torn last line): the rebuilt summary counts what is there."""
    out, report = small_run
    half = tmp_path / "half"
    shutil.copytree(out, half)
    lines = (half / "results.jsonl").read_text().splitlines(keepends=True)
    kept = [line for line in lines if json.loads(line).get("defense") == "none"]
    (half / "results.jsonl").write_text("".join(kept) + lines[-1][: len(lines[-1]) // 2])
    summary = rebuild_reports(half)
    assert summary.defense("none").eps == report.run.defense("none").eps
    assert summary.defense("bit_depth").clean_accuracy == 0.0  # no row of it was written


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("shieldkit report: error:") and "plan.json" in err and err.strip().count("\n") == 0


def test_an_unknown_row_is_refused_by_name():
    with pytest.raises(ValueError, match="type='mystery'"):
        row_from_json({"type": "mystery", "key": "x"})
    row = row_from_json({"type": "check", "check": "large_eps|adaptive", "key": "k", "defense": "d",
                         "attack": "pgd", "eps": 1.0, "samples": 3, "accuracy": 0.0, "error": None})
    assert isinstance(row, LargeEpsRow) and row.mode == "adaptive"


def test_a_section_added_to_the_list_appears_in_both_reports(small_run, digits, monkeypatch):
    out, report = small_run

    class Provenance(sections_module.Section):
        def blocks(self, context):
            return [sections_module.Heading("Provenance"),
                    sections_module.Paragraph(f"Run `{context.summary.config_hash}` on *{context.summary.n}* samples."),
                    sections_module.Table(["defence", "clean"], [[sections_module.Cell(d.label, css="name"),
                                                               sections_module.Cell(f"{d.clean_accuracy:.2f}")]
                                                              for d in context.summary.defenses])]

    monkeypatch.setattr(sections_module, "SECTIONS", [*sections_module.SECTIONS, Provenance()])
    report_module.write_reports(out, report.run)
    markdown = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    digest = report.run.config_hash
    assert "## Provenance" in markdown and f"Run `{digest}` on *40* samples." in markdown
    assert "| bit_depth |" in markdown.split("## Provenance")[1]
    assert "<h2>Provenance</h2>" in page and f"<code>{digest}</code>" in page and "<em>40</em>" in page
    assert page.split("<h2>Provenance</h2>")[1].count("<tr>") == 3  # header and two defences
    # the built-in sections are all still there, in both formats
    for heading in ("Flags", "Cost", "Attacks per defence"):
        assert f"## {heading}" in markdown and f"<h2>{heading}</h2>" in page
    assert '<table id="summary">' in page and page.count('class="flagged"') > 0


def test_a_run_written_before_the_typed_records_is_refused_with_its_format(digits_mlp, digits, tmp_path):
    options = dict(attacks=["fgsm"], defenses=["none"], eps=[0.1], n=20, batch_size=20, out_dir=tmp_path,
                   quiet=True, checks=False)
    evaluate(digits_mlp, digits[0], **options)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["format"] == RESULTS_FORMAT
    del config["format"]  # what a run written before the format was versioned holds
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(InvalidParameterError, match=rf"holds results format 1; this shieldkit reads format "
                                                    rf"{RESULTS_FORMAT} only"):
        evaluate(digits_mlp, digits[0], resume=True, **options)


def test_the_cli_refuses_an_old_format_resume_in_one_line(digits_mlp, tmp_path, capsys):
    args = ["evaluate", "--model", digits_mlp.saved_path, "--data", "digits", "--attacks", "fgsm", "--eps", "0.1",
            "--n", "20", "--out", str(tmp_path), "--quiet"]
    assert main(args) == 0
    config = json.loads((tmp_path / "config.json").read_text())
    config["format"] = 1
    (tmp_path / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert main([*args, "--resume"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "results format 1" in error and f"format {RESULTS_FORMAT}" in error


def test_the_evaluations_pgd_is_create_attack_pgd():
    config = EvalConfig(eps=[1.5], norm="l2", attacks=[], defenses=[])
    suite = resolve_suite([("pgd", {"steps": 40}), ("cw.torchattacks", {"steps": 5})], ["none"], config)
    pgd, cw = suite.attacks
    built = pgd.build(1.5, "l2", (0.0, 1.0), seed=7)
    direct = sk.create_attack("pgd", steps=40, eps=1.5, norm="l2", seed=7)
    assert built.get_params() == direct.get_params() and built.name == direct.name == "pgd.native"
    assert built.step_size is None  # the attack's own rule (eps / 4), not one the evaluation imposes
    # an attack whose step is a learning rate keeps it
    assert cw.build(1.5, "l2", (0.0, 1.0), seed=0).step_size == sk.create_attack("cw.torchattacks").step_size


class _Rounding(TransformDefense):
    """A non-differentiable transform that declares its adaptive needs instead of being named in a table."""

    family = "test_rounding"
    adaptive_gradient = "surrogate"
    adaptive_attacks = (("fgsm", {}), ("overpowered", {}))  # overpowered: L2 only, left out of an L-inf grid

    def _transform(self, x):
        return torch.round(x * 4) / 4

    def surrogate(self, x):
        return x * 0.5 + 0.25


class _CustomView(_Rounding):
    def adaptive_view(self, deployed):
        return nn.Sequential(deployed)


def test_a_defence_declares_its_adaptive_evaluation_on_the_base_class(digits_mlp):
    plan = plan_defense("rounding", _Rounding(), digits_mlp, norm="linf")
    assert plan.view.gradient == "surrogate" and "surrogate" in plan.view_description
    assert plan.extra_attacks == [("fgsm", {})]
    plan_l2 = plan_defense("rounding", _Rounding(), digits_mlp, norm="l2")
    assert [name for name, _ in plan_l2.extra_attacks] == ["fgsm", "overpowered"]
    custom = plan_defense("rounding", _CustomView(), digits_mlp)
    assert isinstance(custom.view, nn.Sequential) and "adaptive_view()" in custom.view_description
    gan = sk.create_defense("defense_gan", generator=sk.gan.smoke_generator((1, 8, 8)), steps=2)
    assert gan.adaptive_gradient == "bpda" and ("overpowered", {}) in gan.adaptive_attack()


def test_reseeding_is_public_and_restarts_the_defences_randomness():
    noise = sk.create_defense("gaussian_noise", sigma=0.1, seed=3)
    x = torch.full((2, 1, 8, 8), 0.5)
    first = noise(x)
    noise.reseed(3)
    assert torch.equal(noise(x), first)
    noise.reseed(4)
    assert not torch.equal(noise(x), first)
    with pytest.raises(InvalidParameterError, match="seed"):
        noise.reseed(-1)
    assert not hasattr(noise, "generator")  # the RNG is rng(); a GAN generator is something else


def test_one_construction_path_names_the_source_before_the_constructor_validates():
    with pytest.raises(InvalidParameterError, match=r"^pgd\.native: steps must be"):
        sk.create_attack("pgd", steps=0)
    pgd_class = type(sk.create_attack("pgd"))
    assert pgd_class.create("somewhere", steps=2).name == "pgd.somewhere"
    assert pgd_class(steps=2).name == "pgd"  # built directly: no source
    with pytest.raises(InvalidParameterError, match=r"^jpeg\.native: "):
        sk.create_defense("jpeg", quality=0)


def test_attack_rows_keep_their_fields_in_the_json_form():
    row = AttackRow(key="k", defense="none", eps=0.1, stage="naive", attack="fgsm", name="fgsm.native",
                    access="gradient", chunk=(0, 10), seed=1, attacked=[1, 2], fooled=[2])
    data = to_json(row)
    assert data["type"] == "attack" and data["chunk"] == [0, 10] and data["fooled"] == [2]
    assert row_from_json(json.loads(json.dumps(data))) == row


def test_shieldkit_evaluate_is_a_function_with_its_real_signature():
    import importlib
    import inspect

    parameters = inspect.signature(sk.evaluate).parameters
    assert list(parameters)[:5] == ["model", "data", "attacks", "defenses", "eps"]
    assert parameters["eps"].default is None and parameters["suite"].default == "standard"  # None: the data's grid
    assert inspect.isfunction(sk.evaluate) and sk.evaluate is evaluate
    # code written for the old layout fails on its import with a message that says where things went
    with pytest.raises(ImportError, match="moved to shieldkit.evaluation"):
        importlib.import_module("shieldkit.evaluate")
    assert inspect.isfunction(sk.evaluate)  # a failed import binds nothing over the function
