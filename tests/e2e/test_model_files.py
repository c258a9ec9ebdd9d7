"""Model files: a pickle is refused unless trusted (and runs nothing), the safe formats load and evaluate,
and everything shieldkit writes itself (train's model.pt, the fitted-trainer cache) is a state dict with its spec."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from shieldkit.cli import main
from shieldkit.evaluation.results import read_rows
from shieldkit.models import mlp

REPO = Path(__file__).resolve().parents[2]
SAMPLES = 60  # the first digits test images, as a .npz file (--data FILE): small runs, known order
ATTACK = ["--attacks", "fgsm", "--eps", "0.1", "--quiet"]


@pytest.fixture(scope="module")
def small(digits, tmp_path_factory):
    """(the images, the --data/--attacks arguments of a small run on them)."""
    import numpy as np

    test = digits[0][:SAMPLES]
    path = tmp_path_factory.mktemp("data") / "digits60.npz"
    np.savez(path, x=(test.x * 255).round().to(torch.uint8).numpy(), y=test.y.numpy())
    return test, ["--data", str(path), *ATTACK]


class _Malicious:
    """Unpickling this creates ``marker``: what a hostile model file would do instead."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def evaluate_cli(capsys, *argv):
    code = main(["evaluate", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def clean_predictions(out: Path) -> list[int]:
    rows = sorted((r for r in read_rows(out) if r["key"].startswith("clean|")), key=lambda r: r["chunk"][0])
    return [p for row in rows for p in row["pred"]]


def attack_rows(out: Path) -> dict[str, list[int]]:
    return {r["key"]: r["fooled"] for r in read_rows(out) if r["key"].startswith("attack|")}


@pytest.mark.parametrize("name", ["evil.pt", "evil.pt2"])  # the format is read from the content, not the name
def test_a_malicious_pickle_is_refused_and_runs_nothing(name, small, tmp_path, capsys):
    marker = tmp_path / "code-ran"
    path = tmp_path / name
    torch.save(_Malicious(marker), path)
    assert not marker.exists()
    code, out, err = evaluate_cli(capsys, "--model", str(path), *small[1], "--out", str(tmp_path / "out"))
    assert code == 2, (out, err)
    assert err.strip().count("\n") == 0, err
    assert str(path) in err and "pickle" in err and "--trust-pickle" in err
    for safe in ("torch.export.save(torch.export.export(model, (x,)), 'm.pt2')", "torch.jit.save(torch.jit.script",
                 "torch.save(model.state_dict()", "--model pkg.module:build --weights"):
        assert safe in err, err
    assert not marker.exists(), "loading the refused file ran its code"
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_a_pickled_module_loads_with_trust_pickle_and_a_warning(digits_mlp, small, tmp_path, capsys, caplog):
    path = tmp_path / "whole.pt"
    torch.save(digits_mlp, path)
    code, _, err = evaluate_cli(capsys, "--model", str(path), *small[1], "--out", str(tmp_path / "refused"))
    assert code == 2 and "--trust-pickle" in err
    with caplog.at_level("WARNING"):
        code, out, err = evaluate_cli(capsys, "--model", str(path), "--trust-pickle", *small[1],
                                      "--out", str(tmp_path / "out"))
    assert code == 0, err
    assert any("--trust-pickle" in r.getMessage() and "runs any code" in r.getMessage() for r in caplog.records)
    assert clean_predictions(tmp_path / "out") == digits_mlp(small[0].x).argmax(1).tolist()


@pytest.fixture(scope="module")
def reference_run(digits_mlp, small, tmp_path_factory):
    """The in-memory module evaluated through the API: what every file format must reproduce."""
    from shieldkit.evaluation import evaluate

    out = tmp_path_factory.mktemp("reference")
    evaluate(digits_mlp, small[0], attacks=["fgsm"], eps=[0.1], out_dir=out, quiet=True)
    return out


def _save(kind: str, model, x, folder: Path) -> list[str]:
    """Save ``model`` in one safe format; returns the ``--model``/``--config`` arguments that load it."""
    if kind == "export-static-batch":  # the snippet the refusal shows: a fixed batch of one
        path = folder / "m.pt2"
        torch.export.save(torch.export.export(model, (x[:1],)), path)
        return ["--model", str(path)]
    if kind == "export-dynamic-batch":
        path = folder / "m.bin"  # any name: the content says what it is
        torch.export.save(torch.export.export(model, (x[:2],), dynamic_shapes=({0: torch.export.Dim("b")},)), path)
        return ["--model", str(path)]
    if kind == "torchscript":
        path = folder / "m.ts"
        torch.jit.save(torch.jit.script(model), path)
        return ["--model", str(path)]
    if kind == "factory-config":
        weights = folder / "w.pt"
        torch.save(model.state_dict(), weights)
        config = folder / "run.toml"
        config.write_text(f'[model]\nfactory = "shieldkit.models.zoo:mlp"\nweights = "{weights.as_posix()}"\n'
                          "kwargs = { hidden = 64 }\n")
        return ["--config", str(config)]
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["export-static-batch", "export-dynamic-batch", "torchscript", "factory-config"])
def test_each_safe_format_evaluates_like_the_module_it_was_saved_from(kind, digits_mlp, small, reference_run,
                                                                        tmp_path, capsys):
    arguments = _save(kind, digits_mlp, small[0].x, tmp_path)
    code, out, err = evaluate_cli(capsys, *arguments, *small[1], "--out", str(tmp_path / "out"))
    assert code == 0, err
    # The independent reference: the original module's own predictions on the same images.
    assert clean_predictions(tmp_path / "out") == digits_mlp(small[0].x).argmax(1).tolist()
    assert attack_rows(tmp_path / "out") == attack_rows(reference_run)


def test_a_factory_with_weights_on_the_command_line(small, tmp_path, capsys):
    torch.manual_seed(1)
    model = mlp().eval()  # the factory's defaults
    torch.save(model.state_dict(), tmp_path / "w.pt")
    code, _, err = evaluate_cli(capsys, "--model", "shieldkit.models.zoo:mlp", "--weights", str(tmp_path / "w.pt"),
                                *small[1], "--n", "20", "--out", str(tmp_path / "out"))
    assert code == 0, err
    assert len(clean_predictions(tmp_path / "out")) == 20


@pytest.mark.parametrize("argv, expected", [
    (["--model", "STATE_DICT"], "holds a state dict, not a model; give the factory"),
    (["--model", "mlp", "--weights", "STATE_DICT"], "--weights: a state dict needs the factory"),
    (["--model", "shieldkit.models.zoo:nothing_here"], "has no function 'nothing_here'"),
    (["--model", "shieldkit.models.zoo:mlp", "--weights", "STATE_DICT", "--config", "BAD_KWARGS"],
     "does not fit shieldkit.models.zoo:mlp"),
])
def test_model_file_mistakes_are_one_line_exit_2(argv, expected, small, tmp_path, capsys):
    torch.manual_seed(0)
    torch.save(mlp(hidden=8).state_dict(), tmp_path / "sd.pt")
    (tmp_path / "bad.toml").write_text("[model]\nkwargs = { hidden = 9 }\n")
    argv = [str(tmp_path / "sd.pt") if a == "STATE_DICT" else str(tmp_path / "bad.toml") if a == "BAD_KWARGS"
            else a for a in argv]
    code, out, err = evaluate_cli(capsys, *argv, *small[1], "--out", str(tmp_path / "out"))
    assert code == 2, (out, err)
    assert err.startswith("shieldkit evaluate: error:") and err.strip().count("\n") == 0, err
    assert expected in err


def test_shieldkit_train_writes_a_state_dict_that_evaluate_loads(small, tmp_path, capsys):
    out = tmp_path / "train"
    code = main(["train", "--defense", "adversarial_training:attack=fgsm:eps=0.1", "--model", "mlp", "--data",
                 "digits", "--train-samples", "200", "--epochs", "1", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    saved = torch.load(out / "model.pt", weights_only=True)  # no code: tensors, numbers and strings
    assert saved["spec"] == {"name": "mlp", "params": {"in_features": 784, "num_classes": 10}}
    rebuilt = mlp(in_features=784, num_classes=10)
    rebuilt.load_state_dict(saved["state_dict"])
    code, _, err = evaluate_cli(capsys, "--model", str(out / "model.pt"), *small[1], "--out", str(tmp_path / "ev"))
    assert code == 0, err
    assert clean_predictions(tmp_path / "ev") == rebuilt.eval()(small[0].x).argmax(1).tolist()


def test_the_fitted_trainer_cache_is_a_state_dict_and_is_reused(digits_mlp, digits, tmp_path):
    from shieldkit.evaluation import evaluate

    options = dict(attacks=["fgsm"], eps=[0.1], n=40, quiet=True, checks=False, train_data=digits[1].subset(300, seed=0),
                   defenses=[{"name": "adversarial_training", "attack": "fgsm", "eps": 0.1,
                              "fit": {"epochs": 1, "batch_size": 64}}])
    evaluate(digits_mlp, digits[0], out_dir=tmp_path / "a", **options)
    cache = list((tmp_path / "a" / "cache").glob("*.pt"))
    assert len(cache) == 1
    saved = torch.load(cache[0], weights_only=True)
    assert set(saved["state_dict"]) == set(digits_mlp.state_dict())
    stamp = cache[0].stat().st_mtime_ns
    evaluate(digits_mlp, digits[0], out_dir=tmp_path / "a", resume=False, **options)
    assert cache[0].stat().st_mtime_ns == stamp, "the cache was refitted instead of read"
    first = {r["key"]: r.get("fooled") for r in read_rows(tmp_path / "a")}
    evaluate(digits_mlp, digits[0], out_dir=tmp_path / "b", **options)  # a fresh fit, no cache
    assert first == {r["key"]: r.get("fooled") for r in read_rows(tmp_path / "b")}


def test_no_torch_load_outside_the_opt_in_pickle_path_unpickles_code():
    calls = []
    for path in (REPO / "shieldkit").rglob("*.py"):
        text = path.read_text()
        for match in re.finditer(r"torch\.load\((?:[^()]|\([^()]*\))*\)", text):
            calls.append((path.relative_to(REPO).as_posix(), match.group(0)))
    assert len(calls) >= 8
    unsafe = [(where, call) for where, call in calls if "weights_only=True" not in call]
    assert unsafe == [("shieldkit/models/files.py", 'torch.load(path, map_location="cpu", weights_only=False)')], unsafe
    source = (REPO / "shieldkit/models/files.py").read_text()
    branch = source[source.index('elif kind == "pickle":'):source.index('elif kind == "state_dict":')]
    assert "if not trust_pickle:" in branch and "weights_only=False" in branch


def test_train_json_records_the_run(tmp_path):
    out = tmp_path / "t"
    assert main(["train", "--defense", "noise_training", "--model", "tiny_cnn", "--data", "digits",
                 "--train-samples", "64", "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "train.json").read_text())["model"] == "tiny_cnn"
    assert torch.load(out / "model.pt", weights_only=True)["spec"]["name"] == "tiny_cnn"
