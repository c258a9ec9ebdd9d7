"""`shieldkit evaluate` and `shieldkit.evaluation.evaluate`: grids, adaptive attacks, masking flags, resume, reports."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from support.defense_references import reference_pgd
from support.needs import need, need_chromium
from support.run_folders import assert_rebuilds_from_disk

import shieldkit as sk
from shieldkit.cli import main
from shieldkit.core.errors import InvalidParameterError
from shieldkit.evaluation import Report, Runner, evaluate
from shieldkit.evaluation.config import EvalConfig
from shieldkit.evaluation.results import read_rows

REPO = Path(__file__).resolve().parents[2]
VOLATILE = ("seconds",)


def stable(rows):
    """Rows without wall-clock fields, keyed by unit."""
    return {row["key"]: {k: v for k, v in row.items() if k not in VOLATILE} for row in rows}


def cli(capsys, *argv):
    code = main(["evaluate", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ------------------------------------------------------------ bad input, exit 2


def _l2_only_attack():
    import shieldkit as sk

    return next(a for a in sk.list_attacks(norm="l2") if "linf" not in sk.attack_info(a)["norms"])


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--attacks", "pgdd"], "did you mean 'pgd'"),
        (["--defenses", "jpg"], "did you mean 'jpeg'"),
        (["--attacks", "pgd:stepz=3"], "unknown parameter 'stepz'"),
        (["--attacks", "L2_ONLY"], "supports only l2"),
        (["--eps", "1.5"], "out of range"),
        (["--eps", "0"], "must be finite and > 0"),
        (["--model", "missing-model.pt"], "no such file"),
        (["--model", "resnet_9000"], "unknown model"),
        (["--data", "mnist", "--data-root-empty"], "mnist"),
        (["--out", "FILE/sub"], "cannot write"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_any_compute(argv, expected, capsys, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("SHIELDKIT_CACHE", str(cache))
    argv = list(argv)
    if "--data-root-empty" in argv:
        argv.remove("--data-root-empty")
        empty = tmp_path / "no-data"
        empty.mkdir()
        monkeypatch.setenv("SHIELDKIT_DATA", str(empty))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    argv = [str(blocker / "sub") if a == "FILE/sub" else _l2_only_attack() if a == "L2_ONLY" else a for a in argv]
    base = {"--model": "mlp", "--data": "digits", "--attacks": "fgsm", "--out": str(tmp_path / "out")}
    for flag, value in base.items():
        if flag not in argv:
            argv += [flag, value]
    # "before any compute" counted, not timed: no module of any model runs a forward pass
    forwards = []
    hook = torch.nn.modules.module.register_module_forward_hook(lambda module, *_: forwards.append(module))
    try:
        code, out, err = cli(capsys, *argv, "--quiet")
    finally:
        hook.remove()
    assert code == 2, (out, err)
    assert err.startswith("shieldkit evaluate: error:") and err.strip().count("\n") == 0, err
    assert expected in err
    assert not cache.exists() or not any(cache.rglob("*.pt")), "a model was trained before the input was checked"
    assert forwards == [], f"{len(forwards)} forward passes before the input was refused (first: {forwards[0]!r})"


def test_l2_attack_in_linf_grid_rejected_by_the_api(digits_mlp, digits, tmp_path):
    with pytest.raises(InvalidParameterError, match="supports only l2 but the grid's norm is linf"):
        evaluate(digits_mlp, digits[0], attacks=[_l2_only_attack()], eps=[0.1], out_dir=tmp_path, quiet=True)


def test_toml_config_with_flags_overriding_it(digits_mlp, capsys, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(f"""
eps = [0.1, 0.3]
n = 30
batch_size = 15
seed = 3
out = "{(tmp_path / 'from-toml').as_posix()}"

[model]
path = "{Path(digits_mlp.saved_path).as_posix()}"

[data]
name = "digits"

[[attacks]]
name = "pgd"
steps = 3

[[attacks]]
name = "noise"

[[defenses]]
name = "none"

[[defenses]]
name = "bit_depth"
bits = 3
""")
    code, out, err = cli(capsys, "--config", str(config), "--eps", "0.2", "--quiet")
    assert code == 0, err
    assert "eps=0.2 naive/adaptive" in out and "eps=0.1" not in out and "bit_depth" in out
    recorded = json.loads((tmp_path / "from-toml" / "config.json").read_text())["config"]
    assert recorded["eps"] == [0.2] and recorded["seed"] == 3 and recorded["n"] == 30
    assert recorded["attacks"][0] == {"label": "pgd", "name": "pgd.native", "params": {"steps": 3}}
    assert recorded["defenses"][1]["params"] == {"bits": 3}

    config.write_text("epsilon = 0.3\n" + config.read_text())
    code, out, err = cli(capsys, "--config", str(config), "--quiet")
    assert code == 2 and "unknown key 'epsilon'" in err and err.count("\n") == 1
    config.write_text(config.read_text().replace("epsilon = 0.3\n", "") + "colours = 3\n")
    code, out, err = cli(capsys, "--config", str(config), "--quiet")
    assert code == 2 and "bit_depth.native: unknown parameter 'colours'; valid: bits" in err


# ------------------------------------------------------------ MNIST acceptance


def _margin(p: float, n: int, k: float = 3.0) -> float:
    """``k`` binomial standard errors, ``k * sqrt(p (1 - p) / n)``, of a share ``p`` measured on ``n`` samples
    (0 for a figure of 0% or 100%: the test repeats the bench's seeded run)."""
    return k * (p * (1 - p) / n) ** 0.5


# bench/results/defenses.md, "The evaluation's MNIST acceptance run (tests/e2e/test_evaluate.py)", quoted in
# docs/evaluate.md: robust accuracy (naive, adaptive, hand-written reference BPDA PGD) on this test's 100 samples.
MNIST_RUN = {
    "none": {"naive": 0.0, "adaptive": 0.0},
    "jpeg": {"naive": 0.94, "adaptive": 0.0, "reference": 0.0},
    "bit_depth": {"naive": 0.94, "adaptive": 0.0, "reference": 0.0},
    "gradient_masking": {"naive": 0.94, "adaptive": 0.0, "reference": 0.0},
    "adversarial_training": {"naive": 0.15, "adaptive": 0.15},
}


def test_mnist_adaptive_breaks_jpeg_and_bit_depth_and_masking_is_flagged(mnist_model, mnist_test, tmp_path):
    """Done-means: naive far above adaptive for JPEG and bit depth at eps=0.3, adaptive as strong as against
    the undefended model and no weaker than a BPDA PGD written here, the gradient-masking defence flagged, an
    adversarially trained model not flagged for masking. Thresholds: MNIST_RUN's figures, 3 SE on n = 100."""
    from shieldkit.data import load

    n = 100
    train = load("mnist", split="train").subset(2000, seed=1)
    trainer = {"name": "adversarial_training", "attack": "pgd", "eps": 0.3, "alpha": 0.0,
               "attack_params": {"steps": 3}, "fit": {"epochs": 1, "batch_size": 50}}
    report = evaluate(
        mnist_model, mnist_test, attacks=["fgsm", ("pgd", {"steps": 10}), "noise"],
        defenses=["none", "jpeg", "bit_depth", "gradient_masking", trainer],
        eps=[0.3], n=n, batch_size=100, out_dir=tmp_path / "mnist", train_data=train, quiet=True)
    undefended = report.robust_accuracy("none", 0.3)
    assert undefended <= MNIST_RUN["none"]["adaptive"] + _margin(MNIST_RUN["none"]["adaptive"], n)
    chosen = torch.randperm(len(mnist_test), generator=torch.Generator().manual_seed(0))[:n].sort().values
    x, y = mnist_test.x[chosen], mnist_test.y[chosen]  # the evaluation's samples (seed 0)
    for defense in ("jpeg", "bit_depth", "gradient_masking"):
        figure = MNIST_RUN[defense]
        naive = report.robust_accuracy(defense, 0.3, mode="naive")
        adaptive = report.robust_accuracy(defense, 0.3, mode="adaptive")
        deployed = sk.create_defense(defense).wrap(mnist_model)
        reference = sk.models.accuracy(deployed, reference_pgd(deployed, x, y, step_size=0.075), y)
        # masked: the naive figure - 3 SE (e.g. 94% - 7.1 points); adaptive as strong as undefended (0% and
        # 0% measured: no binomial spread, no margin) and no weaker than the reference (+ 3 SE of its figure)
        assert naive >= figure["naive"] - _margin(figure["naive"], n), (defense, naive, figure)
        assert adaptive <= undefended, (defense, adaptive, undefended)
        assert adaptive <= figure["adaptive"] + _margin(figure["adaptive"], n), (defense, adaptive, figure)
        assert adaptive <= reference + _margin(figure["reference"], n), (defense, adaptive, reference)
        assert reference <= figure["reference"] + _margin(figure["reference"], n), (defense, reference, figure)
    masking = {flag["check"] for flag in report.flags("gradient_masking", "naive")}
    assert {"zero_gradients", "large_eps"} <= masking
    assert report.flags("gradient_masking", "adaptive") == []
    # not flagged for masking; a 10-step PGD has not converged on a 1-epoch adversarially trained model,
    # and the checklist's more_effort check (twice the steps, a restart) says so
    trained = report.flags("adversarial_training")
    assert {flag["check"] for flag in trained} <= {"more_effort"}, trained
    assert all("has not converged" in flag["reason"] for flag in trained)
    # the adversarially trained model's measured figure - 3 SE on n = 100
    robust = report.robust_accuracy("adversarial_training", 0.3)
    trained_figure = MNIST_RUN["adversarial_training"]["adaptive"]
    assert robust >= trained_figure - _margin(trained_figure, n) and robust > undefended, (robust, trained_figure)
    table = report.table()
    assert "gradient_masking" in table and "zero_gradients" in table


# ------------------------------------------------------------ resume


def _cli_args(model_path: str, out: Path) -> list[str]:
    return ["--model", model_path, "--data", "digits", "--attacks", "fgsm", "pgd:steps=5", "noise",
            "--defenses", "none", "bit_depth", "--eps", "0.1", "0.2", "0.3", "--n", "240",
            "--batch-size", "10", "--out", str(out), "--quiet"]


def _run_cli(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "shieldkit", "evaluate", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# Run the command in a child that SIGKILLs itself in the middle of appending row `rows + 1`: the first
# `rows` rows are on disk, then half of the next line (flushed and fsync-ed), then the kill. Where the
# run dies is fixed by the row count, not by when a watching parent gets round to signalling it.
_KILL_AFTER_ROWS = """
import os, signal, sys
from shieldkit.evaluation import results
rows, written, write = int(sys.argv[1]), [0], results.ResultsStore._write
def _write(self, line):
    if written[0] == rows:
        self._handle.write(line[: len(line) // 2])
        self._handle.flush()
        os.fsync(self._handle.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
    written[0] += 1
    write(self, line)
results.ResultsStore._write = _write
from shieldkit.cli import main
sys.exit(main(["evaluate", *sys.argv[2:]]))
"""


def _run_cli_killed_after(rows: int, args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", _KILL_AFTER_ROWS, str(rows), *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigkill_half_way_then_resume_equals_an_uninterrupted_run(digits_mlp, tmp_path):
    reference = _run_cli(_cli_args(digits_mlp.saved_path, tmp_path / "reference"))
    out, err = reference.communicate(timeout=300)  # a safety net: the run takes seconds
    assert reference.returncode == 0, err
    expected = stable(read_rows(tmp_path / "reference"))

    half = len(expected) // 2
    killed = _run_cli_killed_after(half, _cli_args(digits_mlp.saved_path, tmp_path / "run"))
    _, err = killed.communicate(timeout=300)
    assert killed.returncode == -signal.SIGKILL, f"the run was not killed half-way (exit {killed.returncode}): {err}"
    written = (tmp_path / "run" / "results.jsonl").read_bytes()
    assert written.count(b"\n") == half and not written.endswith(b"\n"), "expected half the rows and a torn line"

    resumed = _run_cli(_cli_args(digits_mlp.saved_path, tmp_path / "run") + ["--resume"])
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    rows = read_rows(tmp_path / "run")
    assert len(rows) == len({row["key"] for row in rows}) == len(expected), "duplicated or lost rows"
    assert stable(rows) == expected
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    reference_summary = json.loads((tmp_path / "reference" / "summary.json").read_text())
    accuracies = lambda s: [(d["label"], d["eps"]) for d in s["defenses"]]  # noqa: E731
    strip = lambda s: json.loads(json.dumps(accuracies(s)), object_hook=lambda o: {k: v for k, v in o.items()  # noqa: E731
                                                                                   if k not in VOLATILE})
    assert strip(summary) == strip(reference_summary)
    assert "bit_depth" in out


def _wait_for_lock(out: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    """Until ``process`` holds the run lock of ``out`` (its pid is in the lock file)."""
    lock = out / ".shieldkit.lock"
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if lock.is_file() and lock.read_text().strip() == str(process.pid):
            return
        time.sleep(0.02)
    raise AssertionError(f"process {process.pid} never took the lock (exit status {process.poll()})")


def _refused_while_running(args: list[str], out: Path) -> None:
    """Start a run, then the same one again while it holds the folder: the second exits 2 at once.

    The first is stopped (SIGSTOP) once it holds the lock and continued after the second has
    exited, so the two overlap whatever the machine's speed.
    """
    first = _run_cli(args)
    _wait_for_lock(out, first)
    first.send_signal(signal.SIGSTOP)
    try:
        second = _run_cli(args)
        _, err = second.communicate(timeout=300)
    finally:
        first.send_signal(signal.SIGCONT)
    assert second.returncode == 2, err
    message = err.strip()
    assert len(message.splitlines()) == 1 and str(out) in message and f"process {first.pid}" in message, message
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err


def test_two_runs_or_two_resumes_into_one_folder_the_second_is_refused(digits_mlp, tmp_path):
    out = tmp_path / "run"
    args = _cli_args(digits_mlp.saved_path, out)
    _refused_while_running(args, out)
    complete = read_rows(out)
    keys = [row["key"] for row in complete]
    assert len(keys) == len(set(keys))
    # Cut the run in half (as a kill would) and resume it twice at once: one resumes, one is refused.
    results = out / "results.jsonl"
    lines = results.read_bytes().splitlines(keepends=True)
    results.write_bytes(b"".join(lines[: len(lines) // 2]))
    _refused_while_running(args + ["--resume"], out)
    resumed = read_rows(out)
    assert sorted(row["key"] for row in resumed) == sorted(keys)  # every unit exactly once
    assert stable(resumed) == stable(complete)
    # a lock file left by a finished (or killed) run is taken over
    assert (out / ".shieldkit.lock").is_file()
    again = _run_cli(args + ["--resume"])
    assert again.wait(timeout=300) == 0


def test_resume_drops_a_truncated_last_row_and_refuses_a_changed_config(digits_mlp, digits, tmp_path):
    options = dict(attacks=["fgsm", "noise"], defenses=["none"], eps=[0.1, 0.3], n=60, batch_size=20,
                   out_dir=tmp_path, quiet=True, checks=False)
    sk.evaluate(digits_mlp, digits[0], **options)  # the public function
    complete = stable(read_rows(tmp_path))
    results = tmp_path / "results.jsonl"
    lines = results.read_bytes().splitlines(keepends=True)
    results.write_bytes(b"".join(lines[: len(lines) // 2]) + lines[len(lines) // 2][:25])  # a kill mid-write
    evaluate(digits_mlp, digits[0], resume=True, **options)
    assert stable(read_rows(tmp_path)) == complete
    assert results.read_bytes().count(b"\n") == len(complete)
    with pytest.raises(InvalidParameterError, match=r"configuration differs.*changed: eps"):
        evaluate(digits_mlp, digits[0], resume=True, **{**options, "eps": [0.2]})


# ------------------------------------------------------------ cascade, reports


def test_cascade_matches_the_full_grid_and_reports_time_saved(digits_mlp, digits, tmp_path):
    options = dict(attacks=["fgsm", ("pgd", {"steps": 5, "random_start": False}), ("deepfool", {"steps": 5}),
                            "semantic"],
                   defenses=["none", "bit_depth"], eps=[0.05, 0.1, 0.2], n=60, batch_size=30, quiet=True)
    cascade = evaluate(digits_mlp, digits[0], out_dir=tmp_path / "cascade", **options)
    full = evaluate(digits_mlp, digits[0], out_dir=tmp_path / "full", cascade=False, **options)
    for defense in ("none", "bit_depth"):
        for eps in (0.05, 0.1, 0.2):
            for mode in ("naive", "adaptive"):
                assert cascade.robust_accuracy(defense, eps, mode) == full.robust_accuracy(defense, eps, mode)
    attacked = lambda r: sum(a["attacked"] for d in r.summary["defenses"] for e in d["eps"].values()  # noqa: E731
                             for a in e["attacks"])
    assert attacked(cascade) < 0.8 * attacked(full)
    saved = cascade.summary["time"]
    assert saved["saved_seconds"] > 0 and 0 < saved["saved_share"] < 1
    assert "Cascade:" in cascade.table() and "saved" in cascade.table()

    out = tmp_path / "cascade"
    for name in ("results.jsonl", "summary.json", "report.md", "report.html", "config.json", "environment.json"):
        assert (out / name).is_file(), name
    environment = json.loads((out / "environment.json").read_text())
    assert environment["torch"] == torch.__version__ and environment["seed"] == 0
    page = (out / "report.html").read_text()
    assert '<table id="summary">' in page and page.count('src="data:image/png;base64,') >= 3
    assert "<script" not in page and 'src="http' not in page and "href=\"http" not in page
    markdown = (out / "report.md").read_text()
    for link in ("plots/robust_vs_eps.png", "plots/naive_vs_adaptive.png", "plots/examples.png"):
        assert link in markdown and (out / link).is_file()
    assert Report.load(out).robust_accuracy("none", 0.2) == cascade.robust_accuracy("none", 0.2)


# bench/results/defenses.md: feature squeezing's detection rate and its n (misclassified samples) per eps
DIGITS_DETECTION = {"0.1": (0.763, 38), "0.3": (0.305, 59)}


def test_randomised_defence_gets_eot_and_detector_gets_detection_rate(digits_mlp, digits, tmp_path, tmp_path_factory):
    report = evaluate(digits_mlp, digits[0], attacks=["fgsm", ("pgd", {"steps": 5})], eps=[0.1, 0.3],
                      defenses=["randomization", "feature_squeezing"], n=60, batch_size=60, eot=4,
                      train_data=digits[1], out_dir=tmp_path, quiet=True)
    randomized = report.summary["defenses"][0]
    assert "EOT (4 draws)" in randomized["view"]
    assert any(f["check"] == "randomness" for f in report.flags("randomization", "naive"))
    assert not any(f["check"] == "randomness" for f in report.flags("randomization", "adaptive"))
    detector = report.summary["defenses"][1]
    assert detector["detector"]["fpr_fitted"] == pytest.approx(0.05)
    for key, entry in detector["eps"].items():
        # bench/results/defenses.md (the digits detector run), quoted in docs/evaluate.md: the detection rate
        # at each eps, - 3 SE on its n (the samples the attacks misclassified)
        rate, misclassified = DIGITS_DETECTION[key]
        assert entry["detection_rate"] >= rate - _margin(rate, misclassified), (key, entry, rate)
        assert entry["detection_rate"] > detector["detector"]["fpr_fitted"]  # it tells attacks from clean images
        assert entry["correct_or_detected"] >= entry["classifier_only"]
    assert "detection rate at FPR 0.05" in report.table()
    assert_rebuilds_from_disk(tmp_path, tmp_path_factory.mktemp("rebuilt"))  # EOT draws, threshold from plan.json


def test_units_do_not_depend_on_how_chunks_are_split_across_processes(digits_mlp, digits, tmp_path):
    config = EvalConfig(attacks=["fgsm", "pgd:steps=3", "noise"], defenses=["none", "randomization"], eps=[0.2],
                        n=40, batch_size=10, eot=2, checks=False, out=str(tmp_path / "whole"))
    whole = Runner(config, digits_mlp, digits[0], quiet=True)
    whole.run()
    shards = {}
    for rank in range(2):
        config.out = str(tmp_path / f"rank{rank}")
        Runner(config, digits_mlp, digits[0], quiet=True, shard=(rank, 2)).run()
        shards.update(stable(read_rows(config.out)))
    assert shards == stable(read_rows(tmp_path / "whole"))


# ------------------------------------------------------------ the demo (`make demo`)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """`shieldkit evaluate` with no suite arguments is the demo (`make demo`); here on 20 samples, one eps."""
    tmp_path = tmp_path_factory.mktemp("demo")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "SHIELDKIT_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "shieldkit", "evaluate", "--n", "20", "--eps", "0.3", "--quiet",
                           "--out", str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    return out, done.stdout


def test_demo_with_no_suite_arguments_prints_the_table_and_writes_the_report(demo_run):
    out, table = demo_run
    assert "Robust accuracy (%)" in table and "eps=0.3 naive/adaptive" in table
    defenses = ["none", "jpeg", "bit_depth", "randomization", "gradient_masking", "defense_gan", "adversarial_training"]
    for defense in defenses:
        assert f"\n{defense} " in table, defense
    assert "Cascade:" in table and str(out / "report.html") in table
    summary = json.loads((out / "summary.json").read_text())
    sources = {attack["name"].split(".")[1] for attack in summary["attacks"]}
    assert {"native", "torchattacks", "art"} <= sources
    assert {"noise", "semantic", "fgsm", "pgd", "deepfool"} <= {a["name"].split(".")[0] for a in summary["attacks"]}
    page = (out / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 3 and '<table id="summary">' in page
    assert all((out / "plots" / f"{name}.png").stat().st_size > 5000
               for name in ("robust_vs_eps", "naive_vs_adaptive", "examples"))


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium() -> str:
    """The Chromium to drive; a missing one fails the test, saying how to install it."""
    return need_chromium()


def _playwright():
    """Playwright's sync API; a missing one fails the test, saying how to install it."""
    return need("playwright.sync_api", "pip install -e '.[dev]' (playwright)")


def test_demo_report_renders_in_headless_chromium(demo_run, tmp_path):
    """report.html, served on localhost, shows its table and every plot, with no console errors."""
    import functools
    import http.server
    import threading

    playwright = _playwright()
    out, _ = demo_run
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    problems: list[str] = []
    try:
        with playwright.sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=_chromium(), args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda message: message.type == "error" and problems.append(message.text))
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("requestfailed", lambda request: problems.append(f"failed to load {request.url}"))
            response = page.goto(f"http://127.0.0.1:{server.server_address[1]}/report.html", wait_until="load")
            assert response is not None and response.ok
            rows = page.locator("table#summary tbody tr")
            assert rows.count() >= 7  # one row per defence of the demo
            assert "defense_gan" in page.locator("table#summary").inner_text()
            for table in ("diagnosis", "broken-by"):  # how each number was reached
                assert page.locator(f"table#{table} tbody tr").count() >= 1, table
            assert "fgsm" in page.locator("table#broken-by").inner_text()
            # the compact table: only attacks that broke something, each with a count above 0
            counts = page.eval_on_selector_all("table#broken-by tbody tr td:last-child",
                                               "cells => cells.map(c => c.innerText)")
            assert counts and all(int(count) > 0 for count in counts), counts
            # the header names what was measured, before any number
            header = page.locator("ul").first.inner_text()
            for needle in ("model: ", "data: digits", "threat model: linf", "suite: ", "torch ", "shieldkit "):
                assert needle in header, needle
            # every accuracy in the summary table carries its 95% interval
            cells = page.eval_on_selector_all("table#summary tbody td", "cells => cells.map(c => c.innerText)")
            numbers = [cell for cell in cells if re.match(r"^\d+\.\d", cell)]
            assert numbers and all(re.match(r"^\d+\.\d \[\d+\.\d-\d+\.\d\]", cell) for cell in numbers), numbers
            images = page.locator("img")
            assert images.count() == 3
            sizes = page.eval_on_selector_all("img", "els => els.map(e => [e.naturalWidth, e.naturalHeight])")
            assert all(width > 100 and height > 100 for width, height in sizes), sizes
            screenshot = out / "report.png"  # kept in the run folder for a human to look at
            page.screenshot(path=str(screenshot), full_page=True)
            browser.close()
    finally:
        server.shutdown()
    assert problems == []
    assert screenshot.stat().st_size > 20_000  # a blank page compresses to a few kB


# ------------------------------------------------------------ failures during the run, progress


def _small_run(model_path: str, out: Path) -> list[str]:
    return ["evaluate", "--model", model_path, "--data", "digits", "--attacks", "fgsm", "pgd:steps=3",
            "--eps", "0.1,0.2", "--n", "40", "--batch-size", "20", "--out", str(out), "--quiet"]


def test_a_full_disk_is_one_line_exit_1_and_resume_gives_the_uninterrupted_result(digits_mlp, tmp_path, capsys,
                                                                                    monkeypatch):
    import errno

    from shieldkit.evaluation.results import ResultsStore

    assert main(_small_run(digits_mlp.saved_path, tmp_path / "reference")) == 0
    expected = stable(read_rows(tmp_path / "reference"))
    kept = 5
    written = []
    original = ResultsStore._write

    def fills_up(store, line):
        if len(written) == kept:  # half a line reaches the disk, then the device is full
            store._handle.write(line[: len(line) // 2])
            store._handle.flush()
            raise OSError(errno.ENOSPC, "No space left on device")
        written.append(line)
        original(store, line)

    monkeypatch.setattr(ResultsStore, "_write", fills_up)
    capsys.readouterr()
    run = tmp_path / "run"
    assert main(_small_run(digits_mlp.saved_path, run)) == 1
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0, err
    assert "no space left on device" in err and repr(str(run)) in err
    assert f"the {kept} completed rows are kept" in err and "--resume" in err
    assert len(read_rows(run)) == kept

    monkeypatch.setattr(ResultsStore, "_write", original)
    assert main([*_small_run(digits_mlp.saved_path, run), "--resume"]) == 0
    rows = read_rows(run)
    assert len(rows) == len({row["key"] for row in rows}) == len(expected)
    assert stable(rows) == expected


def test_a_file_missing_during_the_run_is_exit_1_not_bad_input(digits_mlp, tmp_path, capsys, monkeypatch):
    import shieldkit.evaluation.report as report

    def vanished(*args, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", str(tmp_path / "run" / "plots" / "robustness.png"))

    monkeypatch.setattr(report, "write_reports", vanished)
    capsys.readouterr()
    assert main(_small_run(digits_mlp.saved_path, tmp_path / "run")) == 1
    err = capsys.readouterr().err
    assert err.startswith("shieldkit evaluate: error:") and err.strip().count("\n") == 0 and "robustness.png" in err
    capsys.readouterr()
    assert main(_small_run(str(tmp_path / "no-such-model.pt2"), tmp_path / "other")) == 2  # named by the user


class _Stderr(io.StringIO):
    """A stand-in for sys.stderr that is (or is not) a terminal."""

    def __init__(self, terminal: bool):
        super().__init__()
        self.terminal = terminal

    def isatty(self) -> bool:
        return self.terminal


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_bars_draw_only_on_a_terminal(terminal, digits_mlp, tmp_path, monkeypatch):
    stream = _Stderr(terminal)
    monkeypatch.setattr(sys, "stderr", stream)
    argv = [a for a in _small_run(digits_mlp.saved_path, tmp_path / "run") if a != "--quiet"]
    assert main(argv) == 0
    text = stream.getvalue()
    lines = [line for line in text.splitlines() if "done (" in line]
    if terminal:
        assert "\r" in text and "unit" in text and not lines  # tqdm's bar, redrawn in place
    else:
        assert "\r" not in text
        # One line per epsilon and sample range (2 x 2), then one for the masking checks; the last counts all.
        assert len(lines) == 5, text
        assert "none: eps=0.1, samples 0-20 done (2/8 units), ~" in lines[0] and lines[0].endswith(" left"), lines[0]
        assert "masking checks done (8/8 units)" in lines[-1]
