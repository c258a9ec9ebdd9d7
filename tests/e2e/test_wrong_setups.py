"""Wrong setups caught, before compute where possible, each in one line with its fix; and a report that says
what it measured, with its findings where they are seen.

Each wrong setup is a mistake a user made with their own model (a factory without weights, data that does not fit
the model, a forgotten ``.eval()``, a model exported in train mode, a softmax at the end, weights that do not
fit the data's labels), run as they ran it, with the message they should have seen.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

import shieldkit as sk
from shieldkit.cli.main import main
from shieldkit.core.errors import InvalidModelError


class Counting(nn.Module):
    """The model with a count of its forward passes: proof of what ran before a refusal."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.forwards = model, 0

    def forward(self, x):
        self.forwards += 1
        return self.model(x)


def small_run(model, data, out: Path, **options):
    options = {"attacks": ["fgsm", ("pgd", {"steps": 5})], "eps": [0.1], "n": 64, "checks": False,
               "quiet": True, **options}
    return sk.evaluate(model, data, out_dir=out, **options)


@pytest.fixture(scope="module")
def mnist_64(mnist_test):
    data = mnist_test.head(64)
    return data.x, data.y


def test_a_factory_without_weights_is_refused_unless_random_weights_is_given(tmp_path, capsys):
    argv = ["evaluate", "--model", "shieldkit.models.zoo:mlp", "--data", "digits", "--attacks", "fgsm",
            "--eps", "0.1", "--n", "16", "--quiet"]
    code = main([*argv, "--out", str(tmp_path / "refused")])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().count("\n") == 0, err
    assert "without --weights" in err and "--random-weights" in err
    assert not (tmp_path / "refused" / "results.jsonl").exists()
    code = main([*argv, "--random-weights", "--out", str(tmp_path / "random")])
    out = capsys.readouterr().out
    assert code == 0
    assert "with random weights" in out  # the console's header names what was evaluated


def test_data_that_does_not_fit_the_model_is_refused_after_one_forward(mnist_model, tmp_path):
    from shieldkit.data import digits

    eight = digits(split="test", size=8).head(16)
    model = Counting(mnist_model)  # a 28x28 model, handed the bundled 8x8 digits
    with pytest.raises(InvalidModelError) as caught:
        small_run(model.eval(), (eight.x, eight.y), tmp_path, n=None)
    message = str(caught.value)
    assert "\n" not in message and "(2, 1, 8, 8)" in message and "match what the model was trained on" in message
    assert model.forwards == 1  # the check itself; no attack ran
    assert not (tmp_path / "results.jsonl").exists()


def test_a_low_clean_accuracy_is_a_warning_on_the_console_and_at_the_top_of_the_report(mnist_64, tmp_path):
    torch.manual_seed(0)
    untrained = nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).eval()  # ~10% on ten classes: under twice chance
    report = small_run(untrained, mnist_64, tmp_path)
    clean = report.clean_accuracy()
    assert clean < 0.2
    warnings = [w for w in report.summary["warnings"] if "twice chance" in w]
    assert len(warnings) == 1 and "normalisation" in warnings[0] and "weights" in warnings[0]
    assert "WARNING clean accuracy of none" in report.table()
    markdown = (tmp_path / "report.md").read_text()
    assert markdown.index("twice chance") < markdown.index("## Robust accuracy")  # above every number


def test_a_floor_set_by_the_user_warns_above_twice_chance(mnist_model, mnist_64, tmp_path):
    from shieldkit.evaluation.config import EvalConfig
    from shieldkit.evaluation.runner import Runner

    config = EvalConfig(eps=[0.1], n=64, checks=False, out=str(tmp_path), min_clean_accuracy=1.0)
    report = Runner(config, mnist_model, mnist_64, attacks=["fgsm"], quiet=True).run()
    assert report.clean_accuracy() < 1.0
    assert any("under the floor of 100.0%" in w for w in report.summary["warnings"])


def test_a_model_handed_over_in_train_mode_is_named(mnist_model, mnist_64, tmp_path, caplog):
    mnist_model.train()
    try:
        with caplog.at_level("WARNING", logger="shieldkit"):
            report = small_run(mnist_model, mnist_64, tmp_path)
    finally:
        mnist_model.eval()
    assert any("evaluated in eval mode; yours was in train mode" in r.getMessage() for r in caplog.records)
    assert any("handed over in train mode" in w for w in report.summary["warnings"])
    assert not mnist_model.training


def test_a_graph_exported_in_train_mode_gets_the_export_after_eval_hint(mnist_64, tmp_path):
    from shieldkit.models.files import ExportedModel

    torch.manual_seed(0)
    network = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 10)).train()
    program = torch.export.export(network, (torch.zeros(2, 1, 28, 28),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    report = small_run(ExportedModel(program), mnist_64, tmp_path, n=32)
    findings = [line for line in report.table().splitlines() if line.startswith("FINDING")]
    assert any("random_forward" in line and "export after model.eval()" in line for line in findings), findings
    # the same network exported in eval mode has no dropout left, and no hint
    network.eval()
    program = torch.export.export(network, (torch.zeros(2, 1, 28, 28),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    report = small_run(ExportedModel(program), mnist_64, tmp_path / "eval", n=32)
    assert "export after model.eval()" not in report.table()


def test_a_softmax_model_s_finding_is_on_the_console_and_in_the_flags_section(mnist_model, mnist_64, tmp_path):
    with_softmax = nn.Sequential(mnist_model, nn.Softmax(dim=1)).eval()
    # the diagnosis runs before any attack, adaptive stage or not (its remedies, Square among them, are not needed)
    report = small_run(with_softmax, mnist_64, tmp_path, n=32, adaptive=False)
    console = report.table().splitlines()
    assert any(line.startswith("FINDING none: probability_outputs") for line in console), console[-8:]
    flags = (tmp_path / "report.md").read_text().split("## Flags", 1)[1].split("\n## ", 1)[0]
    assert "No check failed, but the diagnosis found" in flags and "probability_outputs" in flags


def test_the_report_names_what_it_measured(mnist_model, mnist_64, tmp_path):
    report = small_run(mnist_model, mnist_64, tmp_path, n=32)
    header = (tmp_path / "report.md").read_text().split("## ", 1)[0]
    setup = report.summary["setup"]
    parameters = sum(p.numel() for p in mnist_model.parameters())
    for needle in (type(mnist_model).__name__, f"{parameters:,} parameters", setup["model"]["digest"],
                   "mean (0.1307) / std (0.3081)", "32 of 64 samples", "1x28x28", "10 classes", "linf",
                   "pgd (steps=5", "random_start=True", "fgsm", f"torch {torch.__version__}",
                   f"shieldkit {sk.__version__}", "cpu"):
        assert needle in header, needle
    assert report.table().splitlines()[0].startswith("model: ")


def test_a_zero_cell_carries_no_mark_and_the_broken_by_table_lists_only_attacks_that_broke_something(
        mnist_model, mnist_64, tmp_path):
    # at eps 0.3 FGSM and PGD break this plain CNN almost entirely; Square, black-box, adds nothing after them
    report = small_run(mnist_model, mnist_64, tmp_path, eps=[0.3], n=32,
                       attacks=["fgsm", ("pgd", {"steps": 20}), ("square", {"queries": 50})], checks=True)
    markdown = (tmp_path / "report.md").read_text()
    summary_table = markdown.split("## Robust accuracy", 1)[1].split("\n## ", 1)[0]
    zero_cells = re.findall(r"\| 0\.0 \[[^]]*\][^|]*\|", summary_table)
    assert all("!" not in cell for cell in zero_cells), zero_cells
    broken = markdown.split("## Attack that broke it", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in broken.splitlines() if line.startswith("| ") and "defence" not in line]
    assert rows and all(int(line.rstrip(" |").rsplit("|", 1)[1]) > 0 for line in rows), rows
    entry = report.summary["defenses"][0]["eps"][next(iter(report.summary["defenses"][0]["eps"]))]
    idle = [attack for attack, count in entry["broken_by"].items() if count == 0]
    if idle:
        assert "Broke nothing the attacks before them had not: " in broken
        assert all(attack in broken for attack in idle)
    assert json.loads((tmp_path / "summary.json").read_text())["warnings"] == []
