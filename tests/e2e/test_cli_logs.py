"""The command line and its logs as a user meets them: ``--version``, defaults stated in ``--help``, ``list``
tables that cut no word and say what their columns mean, factories found in the current folder, state-dict
mismatches that keep torch's shapes, and logs (output sent to a file) free of carriage-return progress."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

import shieldkit
from shieldkit.cli import main
from shieldkit.cli.listing import MIN_SUMMARY_WIDTH
from shieldkit.cli.main import build_parser
from shieldkit.models import mlp
from shieldkit.plugins import registry

#: a linear classifier of the digits (28x28 grey): the cheapest model a run can evaluate
FACTORY = '''
from torch import nn


def build(hidden=0):
    layers = [nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, 10)] if hidden else [nn.Linear(784, 10)]
    return nn.Sequential(nn.Flatten(), *layers)
'''


def _environment(**extra: str) -> dict[str, str]:
    """This environment without PYTHONPATH (nothing puts the current folder on the path) and without the
    tests' SHIELDKIT_ settings but SHIELDKIT_DATA; ``extra`` on top."""
    environment = {k: v for k, v in os.environ.items()
                   if k != "PYTHONPATH" and (not k.startswith("SHIELDKIT_") or k == "SHIELDKIT_DATA")}
    return {**environment, **extra}


def _shieldkit_command() -> list[str]:
    """The installed ``shieldkit`` script, whose interpreter puts only the script's own folder on ``sys.path``;
    where there is none, ``python -P -m shieldkit`` (``-P``: without the current folder, as the script)."""
    script = Path(sysconfig.get_path("scripts")) / "shieldkit"
    return [str(script)] if script.is_file() else [sys.executable, "-P", "-m", "shieldkit"]


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ------------------------------------------------------------------ --version


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_prints_shieldkit_s_and_torch_s_versions(flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([flag])
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out
    assert out.startswith(f"shieldkit {shieldkit.__version__} ") and f"torch {torch.__version__}" in out, out


# ------------------------------------------------------------------ defaults in --help


def _option_help(command: str) -> dict[str, str]:
    """Each option of ``command`` (its longest spelling) -> its help text as ``--help`` shows it."""
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.choices and command in a.choices)  # noqa: SLF001
    sub = subparsers.choices[command]
    return {max(a.option_strings, key=len): sub._get_formatter()._expand_help(a)  # noqa: SLF001
            for a in sub._actions if a.option_strings and a.help}  # noqa: SLF001


def test_evaluate_help_states_the_defaults_of_eps_data_and_defenses(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines anywhere
    helps = _option_help("evaluate")
    assert "default: digits" in helps["--data"]
    assert "default: none" in helps["--defenses"]
    eps = helps["--eps"]
    assert "default: the data's grid" in eps and "0.1,0.2,0.3" in eps and "2/255,4/255,8/255" in eps
    for shown in ("default: digits", "default: the data's grid", "jpeg:quality=50 (default: none"):
        assert shown in text, shown


@pytest.mark.parametrize("command", ["evaluate", "train", "train-generator", "list"])
def test_every_option_that_takes_a_value_states_its_default(command):
    helps = _option_help(command)
    parser = build_parser()
    sub = next(a for a in parser._actions if a.choices and command in a.choices).choices[command]  # noqa: SLF001
    takes_value = {max(a.option_strings, key=len) for a in sub._actions  # noqa: SLF001
                   if a.option_strings and a.nargs != 0 and not a.required}
    missing = [option for option in sorted(takes_value) if "default" not in helps.get(option, "")]
    assert not missing, missing


# ------------------------------------------------------------------ list: whole words and a legend


def test_list_attacks_cuts_no_word_and_explains_its_columns(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")  # a terminal this wide: summaries must be shortened
    code, out, err = _run(capsys, "list", "attacks")
    assert code == 0
    lines = out.splitlines()
    header, rows = lines[0], lines[1:]
    start = header.index("summary")
    summaries = {row.split()[0]: row[start:] for row in rows}
    shortened = 0
    for name, shown in summaries.items():
        assert start + len(shown) <= 100 or len(shown) <= MIN_SUMMARY_WIDTH, (name, shown)
        full = " ".join(registry.get_registry().info("attack", name)["summary"].split())
        if shown.endswith("…"):
            shortened += 1
            kept = shown[:-1]
            assert full.startswith(kept) and full[len(kept)] == " ", (name, shown)  # whole words only
        else:
            assert shown == full, (name, shown)
    assert shortened, "at 100 columns some summary should have been shortened"
    legend = " ".join(err.split())
    assert "bounded: keeps the perturbation inside eps" in legend and "targeted: can aim at a chosen class" in legend
    assert "access:" in legend and "shieldkit info NAME" in legend


def test_list_defenses_explains_its_columns(capsys):
    code, _, err = _run(capsys, "list", "defenses")
    legend = " ".join(err.split())
    assert code == 0 and "differentiable:" in legend and "randomized:" in legend and "trainer" in legend


# ------------------------------------------------------------------ factories from the current folder


@pytest.fixture
def project(tmp_path):
    """A user's folder: pkg/mod.py with a factory, its weights in w.pt, and the 4 first digits as a .npz."""
    import numpy as np

    from shieldkit.data import load

    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text(FACTORY)
    namespace: dict = {}
    exec(FACTORY, namespace)  # noqa: S102 - the test's own factory, to save its weights
    torch.manual_seed(0)
    torch.save(namespace["build"]().state_dict(), tmp_path / "w.pt")
    torch.save(namespace["build"](hidden=16).state_dict(), tmp_path / "wide.pt")
    test = load("digits", split="test")
    np.savez(tmp_path / "four.npz", x=(test.x[:4] * 255).round().to(torch.uint8).numpy(), y=test.y[:4].numpy())
    return tmp_path


def test_a_factory_is_imported_from_the_current_folder_without_pythonpath(project):
    environment = _environment(SHIELDKIT_CACHE=str(project / "cache"))
    # The folder is not on the path by itself: a plain import of pkg.mod fails there.
    plain = subprocess.run([sys.executable, "-P", "-c", "import pkg.mod"], cwd=project, env=environment,
                           capture_output=True, text=True, timeout=60)
    assert plain.returncode != 0 and "No module named 'pkg'" in plain.stderr
    result = subprocess.run([*_shieldkit_command(), "evaluate", "--model", "pkg.mod:build", "--weights", "w.pt",
                             "--data", "four.npz", "--attacks", "fgsm", "--eps", "0.1", "--n", "4", "--quiet",
                             "--out", "run"], cwd=project, env=environment, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert (project / "run" / "report.html").is_file()


def test_a_factory_missing_from_the_current_folder_says_where_it_looked(project, capsys, monkeypatch):
    monkeypatch.chdir(project)
    code, _, err = _run(capsys, "evaluate", "--model", "nopkg.mod:build", "--weights", "w.pt", "--data",
                        "four.npz", "--attacks", "fgsm", "--quiet")
    assert code == 2 and err.count("\n") == 1, err
    assert "cannot import 'nopkg.mod'" in err and "current folder" in err and str(project) in err


def test_the_current_folder_is_off_the_path_after_the_import(project, monkeypatch):
    from shieldkit.models.files import load_factory

    monkeypatch.chdir(project)
    before = list(sys.path)
    try:
        assert callable(load_factory("pkg.mod:build"))
        assert sys.path == before
    finally:
        for name in ("pkg.mod", "pkg"):
            sys.modules.pop(name, None)


# ------------------------------------------------------------------ a state dict that does not fit


def test_a_state_dict_mismatch_names_the_key_and_both_shapes(project, capsys, monkeypatch):
    monkeypatch.chdir(project)
    try:
        code, out, err = _run(capsys, "evaluate", "--model", "pkg.mod:build", "--weights", "wide.pt", "--data",
                              "four.npz", "--attacks", "fgsm", "--quiet", "--out", "run")
    finally:
        for name in ("pkg.mod", "pkg"):
            sys.modules.pop(name, None)
    assert code == 2, (out, err)
    assert err.startswith("shieldkit evaluate: error: --weights: 'wide.pt' does not fit") and err.count("\n") == 1
    # the narrow model's single layer is "1"; the wide file holds 1, 2 (hidden) and 3 (the output)
    assert "size mismatch for 1.weight" in err, err
    assert "[16, 784]" in err and "[10, 784]" in err, err  # both shapes, as torch gave them
    assert "Unexpected key(s)" in err or "(and " in err, err


def test_a_registered_network_with_other_weights_keeps_torch_s_details(tmp_path, capsys):
    torch.manual_seed(0)
    torch.save(mlp(hidden=8).state_dict(), tmp_path / "sd.pt")
    code, _, err = _run(capsys, "evaluate", "--model", "shieldkit.models.zoo:mlp", "--weights",
                        str(tmp_path / "sd.pt"), "--data", "digits", "--attacks", "fgsm", "--quiet")
    assert code == 2 and err.count("\n") == 1, err
    assert re.search(r"size mismatch for \S+: copying a param with shape \[8, 784\] from checkpoint, the shape in "
                     r"current model is \[256, 784\]", err), err


# ------------------------------------------------------------------ logs without carriage returns


def test_a_run_that_trains_writes_no_carriage_return_into_its_log(tmp_path):
    """Output sent to a file, a fresh cache (so the reference model trains), no --quiet: progress lines only."""
    log = tmp_path / "log"
    with log.open("w") as stream:
        result = subprocess.run([*_shieldkit_command(), "evaluate", "--n", "16", "--attacks", "fgsm", "--eps", "0.1",
                                 "--out", str(tmp_path / "run")], cwd=tmp_path, stdout=stream,
                                stderr=subprocess.STDOUT, env=_environment(SHIELDKIT_CACHE=str(tmp_path / "cache")),
                                timeout=600)
    text = log.read_text()
    assert result.returncode == 0, text
    assert "\r" not in text, text[:2000]
    assert re.search(r"fit_classifier epoch 1/1: loss", text), text  # the reference model trained, and said so
    assert re.search(r"none: eps=0\.1, samples 0-16 done \(\d+/\d+ units\)", text), text


@pytest.mark.slow
def test_make_demo_sent_to_a_file_writes_no_carriage_return(tmp_path):
    """``make demo > log 2>&1`` as the README says, with a fresh cache (so the demo's models train): several
    minutes on two cores, hence ``slow`` (``pytest -m slow -k make_demo``)."""
    repo = Path(__file__).resolve().parents[2]
    log = tmp_path / "log"
    with log.open("w") as stream:
        result = subprocess.run(["make", "--no-print-directory", "-C", str(repo), "demo",
                                 f"DEMO_ARGS=--out {tmp_path / 'run'}"], stdout=stream, stderr=subprocess.STDOUT,
                                env=_environment(SHIELDKIT_CACHE=str(tmp_path / "cache")), timeout=3600)
    text = log.read_text()
    assert result.returncode == 0, text[-3000:]
    assert "\r" not in text, text[:2000]
    assert re.search(r"epoch 1/\d+: loss", text), text[:3000]  # a model trained, and said so in lines
    assert (tmp_path / "run" / "report.html").is_file(), text[-3000:]


class _Log(io.StringIO):
    """A stand-in for sys.stderr sent to a file: not a terminal."""

    def isatty(self) -> bool:
        return False


def _fit_classifier(data):
    from shieldkit.models import fit_classifier

    fit_classifier(mlp(hidden=8), data, epochs=2, quiet=False)
    return r"fit_classifier epoch 1/2: loss [\d.]+, train accuracy [\d.]+, [\d.]+ s, ~\d+s left"


def _train_generator(data):
    from shieldkit.gan import train_generator

    train_generator("vae", data, steps=20, batch_size=16, quiet=False)
    return r"train_generator vae step 2/20: loss [\d.]+ \([\d.]+ s, ~\d+s left\)"


def _trainer_defense(data):
    shieldkit.create_defense("adversarial_training", attack="fgsm", eps=0.1).fit(mlp(hidden=8), data, epochs=2,
                                                                                 batch_size=32, quiet=False)
    return r"adversarial_training\S* model epoch 1/2: loss [\d.]+, [\d.]+ s, ~\d+s left"


@pytest.mark.parametrize("loop", [_fit_classifier, _train_generator, _trainer_defense])
def test_every_training_loop_writes_lines_not_bars_off_a_terminal(loop, digits, monkeypatch):
    """The loops a run may train through (the reference model, a generator, a trainer defence), not quiet,
    with stderr not a terminal: no carriage return, a line per epoch or tenth of the steps with the time left."""
    from shieldkit.infra.progress import progress_log

    log = _Log()
    monkeypatch.setattr(sys, "stderr", log)
    with progress_log(quiet=False):  # what the commands do
        expected = loop(digits[1].subset(64, seed=0))
    text = log.getvalue()
    assert "\r" not in text, text
    assert re.search(expected, text), text
