"""Every bad input gets one line naming the argument and what was wrong, before any compute (issue 15).

One table of bad inputs to the public API and one to the ``shieldkit`` command.
Each API row names the shieldkit error type it must raise, the words any of
which must name the argument, and a pattern saying what was wrong; the models
handed to attacks, defences and the evaluation raise on their first forward
pass, so a row that validated after computing fails with that error instead.
CLI rows run ``shieldkit.cli.main`` in this process and must exit 2 with exactly
one line of stderr, the error (argparse's usage included: none), no traceback, and
no attack run (``Runner.run`` raises here).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import shieldkit as sk
from shieldkit import cli
from shieldkit.core.errors import (
    InvalidInputError,
    InvalidModelError,
    InvalidParameterError,
    ShieldkitError,
    UnknownNameError,
)
from shieldkit.data import load


class ComputeHappened(AssertionError):
    """Raised by the models below on any forward pass: validation must come first."""


class ExplodingModel(nn.Module):
    """A 1x16x16 -> 10 classifier whose forward pass raises: proof that nothing was computed."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(256, 10)

    def forward(self, x):
        raise ComputeHappened("the model was called before the input was validated")


@pytest.fixture(scope="module")
def case():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 16, 16, generator=generator)
    return SimpleNamespace(model=ExplodingModel(), x=x, y=torch.tensor([0, 1, 2, 3]))


@dataclass(frozen=True)
class Bad:
    """One bad input: ``call(case)`` must raise ``error`` with a one-line message naming one of ``names``."""

    call: object
    error: type[BaseException]
    names: tuple[str, ...]
    what: str  # a regular expression the message must match (what was wrong)


def _attack(name="pgd", **params):
    return sk.create_attack(name, **params)


def _nan_images(c):
    x = c.x.clone()
    x[1, 0, 3, 3] = math.nan
    return x


def _evaluate(c, data=None, **kwargs):
    data = (c.x, c.y) if data is None else data
    return sk.evaluate(c.model, data, attacks=["fgsm"], quiet=True, checks=False, **kwargs)


API_ROWS = [
    # --- the registry: names and constructor parameters
    pytest.param(Bad(lambda c: sk.create_attack("pgdd"), UnknownNameError, ("pgdd",), r"unknown attack"),
                 id="attack-unknown-name"),
    pytest.param(Bad(lambda c: sk.create_attack(""), UnknownNameError, ("attack",), r"unknown attack"),
                 id="attack-empty-name"),
    pytest.param(Bad(lambda c: _attack(stepz=3), InvalidParameterError, ("stepz",), r"unknown parameter"),
                 id="attack-unknown-param"),
    pytest.param(Bad(lambda c: _attack(steps=0), InvalidParameterError, ("steps",), r">= 1"),
                 id="attack-steps-zero"),
    pytest.param(Bad(lambda c: _attack(steps=2.5), InvalidParameterError, ("steps",), r"integer"),
                 id="attack-steps-float"),
    pytest.param(Bad(lambda c: _attack(eps=-0.1), InvalidParameterError, ("eps",), r">= 0"),
                 id="attack-eps-negative"),
    pytest.param(Bad(lambda c: _attack(eps=math.nan), InvalidParameterError, ("eps",), r"finite"),
                 id="attack-eps-nan"),
    pytest.param(Bad(lambda c: _attack(eps="big"), InvalidParameterError, ("eps",), r"number"),
                 id="attack-eps-string"),
    pytest.param(Bad(lambda c: _attack(norm="l3"), InvalidParameterError, ("norm",), r"not supported.*linf"),
                 id="attack-norm-unknown"),
    pytest.param(Bad(lambda c: _attack("fgsm", norm="l0"), InvalidParameterError, ("norm",), r"not supported"),
                 id="attack-norm-unsupported"),
    pytest.param(Bad(lambda c: _attack(seed=1.5), InvalidParameterError, ("seed",), r"integer"),
                 id="attack-seed-float"),
    pytest.param(Bad(lambda c: _attack(seed=-1), InvalidParameterError, ("seed",), r">= 0"),
                 id="attack-seed-negative"),
    pytest.param(Bad(lambda c: _attack(bounds=(1.0, 0.0)), InvalidParameterError, ("bounds",), r"low < high"),
                 id="attack-bounds-reversed"),
    pytest.param(Bad(lambda c: _attack(bounds="ab"), InvalidParameterError, ("bounds",), r"pair"),
                 id="attack-bounds-string"),
    pytest.param(Bad(lambda c: _attack(bounds=(0.0, math.inf)), InvalidParameterError, ("bounds",), r"finite"),
                 id="attack-bounds-infinite"),
    pytest.param(Bad(lambda c: _attack("pgd.torchattacks", step_size=-1.0), InvalidParameterError,
                     ("step_size",), r"\(0"), id="backend-step-size-negative"),
    pytest.param(Bad(lambda c: _attack("apgd.torchattacks", loss="mse"), InvalidParameterError,
                     ("loss",), r"choose one of"), id="backend-choice-unknown"),
    pytest.param(Bad(lambda c: sk.create_defense("jpegg"), UnknownNameError, ("jpegg",), r"unknown defen"),
                 id="defense-unknown-name"),
    pytest.param(Bad(lambda c: sk.create_defense("jpeg", qualty=50), InvalidParameterError, ("qualty",),
                     r"unknown parameter"), id="defense-unknown-param"),
    pytest.param(Bad(lambda c: sk.create_defense("jpeg", quality=0), InvalidParameterError, ("quality",),
                     r"between|>="), id="defense-quality-zero"),
    pytest.param(Bad(lambda c: sk.create_defense("bit_depth", bits=99), InvalidParameterError, ("bits",),
                     r"between"), id="defense-bits-out-of-range"),
    pytest.param(Bad(lambda c: sk.create_model("mnist_cnnn"), UnknownNameError, ("mnist_cnnn",),
                     r"unknown model"), id="model-unknown-name"),
    pytest.param(Bad(lambda c: sk.create_model("mnist_cnn", widht=4), InvalidParameterError, ("widht",),
                     r"unknown parameter"), id="model-unknown-param"),
    pytest.param(Bad(lambda c: load("mnistt"), UnknownNameError, ("mnistt",), r"unknown dataset"),
                 id="load-unknown-name"),
    pytest.param(Bad(lambda c: load("digits", split="validation"), InvalidParameterError, ("split",),
                     r"validation"), id="load-unknown-split"),
    # --- attack.run / attack(model, x, y): images, labels, model
    pytest.param(Bad(lambda c: _attack().run(c.model, c.x.permute(0, 2, 3, 1), c.y), InvalidInputError, ("x",),
                     r"NHWC|channels.last"), id="run-nhwc-images"),
    pytest.param(Bad(lambda c: _attack()(c.model, c.x[:, 0], c.y), InvalidInputError, ("x",), r"\[B, C, H, W\]"),
                 id="run-3d-images"),
    pytest.param(Bad(lambda c: _attack()(c.model, (c.x * 255).to(torch.uint8), c.y), InvalidInputError, ("x",),
                     r"floating"), id="run-uint8-images"),
    pytest.param(Bad(lambda c: _attack()(c.model, c.x.numpy(), c.y), InvalidInputError, ("x",), r"torch.Tensor"),
                 id="run-numpy-images"),
    pytest.param(Bad(lambda c: _attack()(c.model, c.x * 2, c.y), InvalidInputError, ("x",), r"outside bounds"),
                 id="run-images-outside-bounds"),
    pytest.param(Bad(lambda c: _attack()(c.model, _nan_images(c), c.y), InvalidInputError, ("x",), r"non-finite"),
                 id="run-nan-images"),
    pytest.param(Bad(lambda c: _attack()(c.model, c.x[:0], c.y[:0]), InvalidInputError, ("x",), r"empty"),
                 id="run-empty-batch"),
    pytest.param(Bad(lambda c: _attack()(c.model, c.x, c.y.float()), InvalidInputError, ("y",), r"integer"),
                 id="run-float-labels"),
    pytest.param(Bad(lambda c: _attack()(c.model, c.x, c.y[:3]), InvalidInputError, ("y",), r"shape \[4\]"),
                 id="run-batch-mismatch"),
    pytest.param(Bad(lambda c: _attack()(c.model, c.x, c.y - 1), InvalidInputError, ("y",), r"labels in \[-1"),
                 id="run-negative-labels"),
    pytest.param(Bad(lambda c: _attack()(c.model, c.x, c.y.tolist()), InvalidInputError, ("y",), r"torch.Tensor"),
                 id="run-list-labels"),
    pytest.param(Bad(lambda c: _attack("deepfool")(c.model, c.x, c.y, target=c.y), InvalidParameterError,
                     ("target",), r"untargeted only"), id="run-target-on-untargeted"),
    pytest.param(Bad(lambda c: _attack()(c.model, c.x, c.y, target=c.y.float()), InvalidInputError, ("target",),
                     r"integer"), id="run-float-target"),
    pytest.param(Bad(lambda c: _attack()(lambda x: x, c.x, c.y), InvalidModelError, ("model",), r"nn.Module"),
                 id="run-model-not-module"),
    # --- defences
    pytest.param(Bad(lambda c: sk.create_defense("jpeg")(c.x * 2), InvalidInputError, ("x",),
                     r"outside bounds"), id="transform-outside-bounds"),
    pytest.param(Bad(lambda c: sk.create_defense("jpeg")(c.x.permute(0, 2, 3, 1)), InvalidInputError,
                     ("x",), r"NHWC|channels.last"), id="transform-nhwc"),
    pytest.param(Bad(lambda c: sk.create_defense("mahalanobis").fit(c.model, _nan_images(c)), InvalidInputError,
                     ("x_clean",), r"non-finite"), id="detector-fit-nan"),
    pytest.param(Bad(lambda c: sk.create_defense("mahalanobis").fit(c.model, c.x, fpr=1.5), InvalidParameterError,
                     ("fpr",), r"\(0"), id="detector-fit-fpr"),
    pytest.param(Bad(lambda c: sk.create_defense("adversarial_training").fit(c.model, (c.x, c.y), epochs=0),
                     InvalidParameterError, ("epochs",), r">= 1"), id="trainer-fit-epochs-zero"),
    pytest.param(Bad(lambda c: sk.create_defense("adversarial_training").fit(c.model, (c.x, c.y.float())),
                     InvalidInputError, ("y", "labels"), r"integer"), id="trainer-fit-float-labels"),
    # --- Normalize
    pytest.param(Bad(lambda c: sk.Normalize(mean=[0.5], std=[0.0]), InvalidParameterError, ("std",), r"positive"),
                 id="normalize-std-zero"),
    pytest.param(Bad(lambda c: sk.Normalize(mean=[], std=[1.0]), InvalidParameterError, ("mean",), r"empty"),
                 id="normalize-mean-empty"),
    pytest.param(Bad(lambda c: sk.Normalize(mean=["a"], std=[1.0]), InvalidParameterError, ("mean",), r"number"),
                 id="normalize-mean-strings"),
    pytest.param(Bad(lambda c: sk.Normalize(mean=[0.1, 0.2], std=[1.0, 2.0, 3.0]), InvalidParameterError,
                     ("mean", "std"), r"per channel"), id="normalize-length-mismatch"),
    pytest.param(Bad(lambda c: sk.Normalize(mean=[0.5], std=[math.nan]), InvalidParameterError, ("std",),
                     r"finite"), id="normalize-std-nan"),
    pytest.param(Bad(lambda c: sk.Normalize([0.1, 0.2, 0.3], [1.0, 1.0, 1.0])(c.x), InvalidInputError, ("x",),
                     r"channels"), id="normalize-wrong-channels"),
    # --- the evaluation's API
    pytest.param(Bad(lambda c: _evaluate(c, eps=[]), InvalidParameterError, ("eps",), r"at least one"),
                 id="evaluate-eps-empty"),
    pytest.param(Bad(lambda c: _evaluate(c, eps=["abc"]), InvalidParameterError, ("eps",), r"number"),
                 id="evaluate-eps-string"),
    pytest.param(Bad(lambda c: _evaluate(c, eps=[0.1, -0.2]), InvalidParameterError, ("eps",), r"> 0"),
                 id="evaluate-eps-negative"),
    pytest.param(Bad(lambda c: _evaluate(c, norm="l3"), InvalidParameterError, ("norm",), r"not supported"),
                 id="evaluate-norm-unknown"),
    pytest.param(Bad(lambda c: _evaluate(c, batch_size=0), InvalidParameterError, ("batch_size",), r">= 1"),
                 id="evaluate-batch-size-zero"),
    pytest.param(Bad(lambda c: _evaluate(c, n=0), InvalidParameterError, ("n",), r">= 1"),
                 id="evaluate-n-zero"),
    pytest.param(Bad(lambda c: sk.evaluate(c.model, (c.x, c.y), attacks=["pgdd"], quiet=True),
                     UnknownNameError, ("pgdd",), r"unknown attack"), id="evaluate-attack-unknown"),
    pytest.param(Bad(lambda c: _evaluate(c, data=(c.x[:0], c.y[:0])), InvalidInputError, ("data",), r"empty"),
                 id="evaluate-empty-data"),
    pytest.param(Bad(lambda c: _evaluate(c, data=(c.x, c.y[:3])), InvalidInputError, ("data", "y"),
                     r"4|3"), id="evaluate-data-length-mismatch"),
]


def _one_line(message: str) -> None:
    assert message and "\n" not in message.strip(), f"not one line: {message!r}"


@pytest.mark.parametrize("bad", API_ROWS)
def test_bad_api_input_is_one_line_naming_the_argument(bad: Bad, case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the evaluation's default out_dir
    with pytest.raises(ShieldkitError) as caught:
        bad.call(case)
    error = caught.value
    assert isinstance(error, bad.error), f"{type(error).__name__}: {error}"
    message = str(error)
    _one_line(message)
    assert any(re.search(rf"(?<![\w]){re.escape(name)}(?![\w])", message) for name in bad.names), (
        f"names none of {bad.names}: {message}")
    assert re.search(bad.what, message), f"does not say what was wrong ({bad.what!r}): {message}"


# ------------------------------------------------------------------------------------------- the command


def _config(tmp_path, text: str) -> str:
    path = tmp_path / "run.toml"
    path.write_text(text)
    return str(path)


def _evaluate_argv(*flags: str):
    """``shieldkit evaluate`` with ``flags`` on the digits, into the test's folder."""
    return lambda tmp: ["evaluate", "--data", "digits", "--model", "mlp", "--quiet", "--out", str(tmp / "out"),
                        *flags]


def _no_images(tmp) -> object:
    """A folder that exists but holds no images, as ../../etc does: text files, and a sub-folder of them."""
    folder = tmp / "etc"
    (folder / "ssh").mkdir(parents=True)
    (folder / "hosts").write_text("127.0.0.1 localhost\n")
    (folder / "ssh" / "ssh_config").write_text("Host *\n")
    return folder


def _config_argv(text: str):
    return lambda tmp: ["evaluate", "--config", _config(tmp, text), "--quiet", "--out", str(tmp / "out")]


CLI_ROWS = [
    pytest.param(_evaluate_argv("--eps", "abc"), ("eps",), r"number", id="eps-not-a-number"),
    pytest.param(_evaluate_argv("--eps", "-1"), ("eps",), r">=? 0", id="eps-negative"),
    pytest.param(_evaluate_argv("--eps", "0.1,nan"), ("eps",), r"finite", id="eps-nan"),
    pytest.param(_evaluate_argv("--eps", "2"), ("eps",), r"out of range", id="eps-above-pixel-range"),
    pytest.param(lambda tmp: ["evaluate", "--eps", "5"], ("eps",), r"largest meaningful budget is 1",
                 id="eps-above-pixel-range-demo"),
    pytest.param(_evaluate_argv("--n", "0"), ("n", "--n"), r">= 1", id="n-zero"),
    pytest.param(_evaluate_argv("--n", "ten"), ("--n",), r"invalid int", id="n-not-an-integer"),
    pytest.param(_evaluate_argv("--norm", "l3"), ("--norm", "norm"), r"not supported", id="norm-unknown"),
    pytest.param(_evaluate_argv("--batch-size", "0"), ("--batch-size", "batch_size"), r">= 1",
                 id="batch-size-zero"),
    pytest.param(_evaluate_argv("--eot", "0"), ("--eot", "eot"), r">= 1", id="eot-zero"),
    pytest.param(_evaluate_argv("--batch-size", "many"), ("--batch-size",), r"or auto", id="batch-size-not-a-number"),
    pytest.param(_evaluate_argv("--device", "tpu"), ("--device",), r"auto, cpu, cuda", id="device-unknown"),
    pytest.param(_evaluate_argv("--precision", "fp8"), ("--precision",), r"invalid choice", id="precision-unknown"),
    pytest.param(_evaluate_argv("--normalize", "cifar11"), ("--normalize",), r"cifar10", id="normalize-unknown-name"),
    pytest.param(_evaluate_argv("--seed", "-3"), ("--seed", "seed"), r">= 0", id="seed-negative"),
    pytest.param(lambda tmp: ["evaluate", "--model", str(tmp / "missing.pt"), "--quiet", "--out", str(tmp / "o")],
                 ("--model",), r"no such file", id="model-missing-file"),
    pytest.param(lambda tmp: ["evaluate", "--model", "mnist_cnnn", "--quiet", "--out", str(tmp / "o")],
                 ("mnist_cnnn",), r"unknown model", id="model-unknown-name"),
    pytest.param(_evaluate_argv("--data", "nosuchdata"), ("nosuchdata",), r"unknown dataset", id="data-unknown"),
    pytest.param(lambda tmp: ["evaluate", "--data", str(_no_images(tmp)), "--quiet", "--out", str(tmp / "o")],
                 ("--data",), r"holds no images.*per class.*\.npz", id="data-folder-without-images"),
    pytest.param(_evaluate_argv("--attacks", "pgdd"), ("pgdd",), r"unknown attack", id="attacks-unknown"),
    pytest.param(_evaluate_argv("--attacks", ","), ("--attacks",), r"at least one attack.*got ','",
                 id="attacks-empty-list"),
    pytest.param(_evaluate_argv("--attacks", "pgd:steps"), ("--attacks",), r"key=value", id="attacks-no-value"),
    pytest.param(_evaluate_argv("--attacks", "pgd:stepz=3"), ("stepz",), r"unknown parameter",
                 id="attacks-unknown-param"),
    pytest.param(_evaluate_argv("--attacks", "pgd:steps=abc"), ("steps",), r"integer", id="attacks-bad-value"),
    pytest.param(_evaluate_argv("--defenses", "jpegg"), ("jpegg",), r"unknown defen", id="defenses-unknown"),
    pytest.param(_evaluate_argv("--defenses", ","), ("--defenses",), r"at least one defen.*got ','",
                 id="defenses-empty-list"),
    pytest.param(_evaluate_argv("--defenses", "jpeg:quality=0"), ("quality",), r"between|>=",
                 id="defenses-bad-value"),
    pytest.param(lambda tmp: ["evaluate", "--config", str(tmp / "nope.toml"), "--quiet"], ("--config",),
                 r"no such file", id="config-missing"),
    pytest.param(_config_argv("eps = [0.1\n"), ("--config",), r"not valid TOML", id="config-invalid-toml"),
    pytest.param(_config_argv('bounds = "ab"\n'), ("bounds",), r"pair|number", id="config-bounds-string"),
    pytest.param(_config_argv("bounds = [1.0, 0.0]\n"), ("bounds",), r"low < high", id="config-bounds-reversed"),
    pytest.param(_config_argv("epz = [0.1]\n"), ("epz",), r"unknown key", id="config-unknown-key"),
    pytest.param(_config_argv('n = "ten"\n'), ("n",), r"integer", id="config-n-string"),
    pytest.param(_config_argv('cascade = "yes"\n'), ("cascade",), r"true or false", id="config-cascade-string"),
    pytest.param(_config_argv("norm = 3\n"), ("norm",), r"not supported", id="config-norm-number"),
    pytest.param(_config_argv("attacks = 5\n"), ("attacks",), r"list", id="config-attacks-number"),
    pytest.param(_config_argv('eps = "x"\n'), ("eps",), r"number", id="config-eps-string"),
    pytest.param(_config_argv("fpr = 2.0\n"), ("fpr",), r"\(0, 1\)", id="config-fpr-out-of-range"),
    pytest.param(_config_argv('[model]\nname = "mnist_cnnn"\n'), ("mnist_cnnn",), r"unknown model",
                 id="config-model-unknown"),
    pytest.param(_config_argv("model = 3\n"), ("model",), r"table or a name", id="config-model-number"),
    pytest.param(lambda tmp: ["list", "attackz"], ("kind",), r"invalid choice", id="list-bad-kind"),
    pytest.param(lambda tmp: ["info", "pgdd"], ("pgdd",), r"unknown", id="info-unknown-name"),
    pytest.param(lambda tmp: ["evaluate", "--bogus"], ("--bogus",), r"unrecognized", id="evaluate-unknown-flag"),
]


@pytest.fixture
def no_attack_runs(monkeypatch):
    """Any evaluation the command starts fails the row: bad input must be refused before it."""
    from shieldkit.evaluation.runner import Runner

    def refuse(self, *args, **kwargs):
        raise ComputeHappened("the evaluation started although the input was bad")

    monkeypatch.setattr(Runner, "run", refuse)


@pytest.mark.parametrize(("argv", "names", "what"), CLI_ROWS)
def test_bad_command_line_input_exits_2_with_one_line_naming_it(argv, names, what, tmp_path, capsys,
                                                                 no_attack_runs, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        status = cli.main(argv(tmp_path))
    except SystemExit as exit_:  # argparse's own errors
        status = exit_.code
    err = capsys.readouterr().err
    assert status == 2, f"exit {status}: {err}"
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and "error:" in lines[0], f"expected one line of stderr, the error: {err!r}"
    line = lines[0]
    assert any(re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", line) for name in names), (
        f"names none of {names}: {line}")
    assert re.search(what, line), f"does not say what was wrong ({what!r}): {line}"


def test_the_tables_hold_at_least_40_rows_each_way():
    assert len(API_ROWS) >= 40 and len(CLI_ROWS) >= 30
    assert len(API_ROWS) + len(CLI_ROWS) >= 80
