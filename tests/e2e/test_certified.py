"""Certified robustness in the evaluation: randomised smoothing's certificates beside the attacks' numbers,
the consistency check, and the report's certified section (Markdown, HTML, Chromium)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from support.run_folders import assert_rebuilds_from_disk

import shieldkit as sk
from shieldkit.cli import main
from shieldkit.defenses import RandomizedSmoothing
from shieldkit.evaluation import evaluate

SIGMA = 0.25
# Fewer draws than the defaults (n=1000): the evaluation tests check the plumbing and the consistency
# check; tests/component/test_smoothing.py checks the certificate itself at n=1000.
SMOOTHING = {"sigma": SIGMA, "n0": 50, "n": 400, "alpha": 0.001, "n_predict": 50, "attack_samples": 8}
EPS = [0.5, 1.0]


@pytest.fixture(scope="module")
def mnist():
    from shieldkit.data import load

    return load("mnist", split="train").subset(3000, seed=0), load("mnist", split="test")


@pytest.fixture(scope="module")
def smoothing_run(noisy_cnn, mnist, tmp_path_factory):
    out = tmp_path_factory.mktemp("smoothing")
    defense = sk.create_defense("randomized_smoothing", **SMOOTHING)
    report = evaluate(noisy_cnn, mnist[1], attacks=[("pgd", {"steps": 10})], defenses=[defense], eps=EPS,
                      norm="l2", n=40, batch_size=40, out_dir=out, quiet=True)
    return out, report


def _soft_smoothed(model, x, generator, draws=16):
    noisy = x.repeat_interleave(draws, 0) + SIGMA * torch.randn(x.shape[0] * draws, *x.shape[1:], generator=generator)
    return model(noisy).softmax(1).view(x.shape[0], draws, -1).mean(1)


def _vote(model, x, generator, draws=400):
    with torch.no_grad():
        noisy = x.repeat_interleave(draws, 0) + SIGMA * torch.randn(x.shape[0] * draws, *x.shape[1:], generator=generator)
        votes = torch.nn.functional.one_hot(model(noisy).argmax(1), 10).view(x.shape[0], draws, -1).sum(1)
    return votes


def _hand_pgd_l2(model, x, y, eps, steps=20, seed=0):
    """PGD in L2 on the soft smoothed classifier (Salman et al.), written here independently of shieldkit."""
    generator = torch.Generator().manual_seed(seed)
    delta = torch.zeros_like(x, requires_grad=True)
    for _ in range(steps):
        loss = torch.nn.functional.nll_loss(_soft_smoothed(model, x + delta, generator).clamp_min(1e-12).log(), y)
        (grad,) = torch.autograd.grad(loss, delta)
        step = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        delta = (delta + 2.5 * eps / steps * step).detach()
        delta = delta * (eps / delta.flatten(1).norm(dim=1).clamp_min(eps)).view(-1, 1, 1, 1)
        delta = ((x + delta).clamp(0, 1) - x).requires_grad_(True)
    return (x + delta).detach()


def test_certificates_bracket_the_attacks_and_the_consistency_check_passes(smoothing_run, noisy_cnn, mnist, tmp_path):
    out, report = smoothing_run
    record = report.run.defenses[0]
    certified = record.certified
    assert certified is not None and certified.norm == "l2" and certified.params["sigma"] == SIGMA
    assert certified.forwards > 0 and certified.queries == 40 * (SMOOTHING["n0"] + SMOOTHING["n"])
    accuracies = [accuracy for _, accuracy in certified.curve]
    assert accuracies == sorted(accuracies, reverse=True) and accuracies[0] > 0.6  # decreasing, well above chance
    for key, point in certified.at_eps.items():
        assert point.radius == float(key)  # an L2 grid: the radius is eps itself
        assert point.certified <= point.adaptive + 0.05  # lower bound <= upper bound (Monte-Carlo slack)
        assert point.disproved == {"naive": [], "adaptive": []}
    outcome = {c.mode: c for c in record.checks if c.check == "certificate"}
    assert outcome["adaptive"].passed is True and outcome["naive"].passed is True
    # The naive attack differentiates the vote (zero gradients: masked) and is flagged as such, not crashed.
    assert {f.check for f in record.flags("naive")} >= {"zero_gradients"}
    assert not any(f.check == "errors" for f in record.flags("naive"))
    assert_rebuilds_from_disk(out, tmp_path)  # the certificate's norm and parameters come from plan.json


def test_an_independent_l2_attack_never_beats_a_certified_radius(smoothing_run, noisy_cnn, mnist):
    """Every sample certified beyond eps survives a hand-written PGD on the smoothed classifier at eps,
    judged by a hand-written vote with a confidence bound (one-sided Clopper-Pearson, scipy)."""
    from scipy.stats import beta

    _, report = smoothing_run
    rows = [json.loads(line) for line in (report.out_dir / "results.jsonl").read_text().splitlines()]
    certificate = next(r for r in rows if r["type"] == "certificate")
    indices = torch.randperm(len(mnist[1]), generator=torch.Generator().manual_seed(0))[:40].sort().values
    x, y = mnist[1].x[indices], mnist[1].y[indices]
    radii, predictions = torch.tensor(certificate["radii"]), torch.tensor(certificate["predictions"])
    eps = 0.4
    chosen = ((radii > eps) & (predictions == y)).nonzero().flatten()
    assert len(chosen) >= 10
    x_adv = _hand_pgd_l2(noisy_cnn, x[chosen], y[chosen], eps)
    assert (x_adv - x[chosen]).flatten(1).norm(dim=1).max() <= eps + 1e-4
    votes = _vote(noisy_cnn, x_adv, torch.Generator().manual_seed(1))
    hits = votes.gather(1, y[chosen][:, None]).squeeze(1)
    upper = [1 - beta.ppf(0.001, 400 - k, k + 1) if k < 400 else 1.0 for k in hits.tolist()]
    assert all(u >= 0.5 for u in upper), upper  # no certificate confidently broken
    fooled_by_vote = (votes.argmax(1) != y[chosen]).float().mean().item()
    assert fooled_by_vote <= 0.2  # and the attack mostly fails, as a certificate beyond eps says it must


class _DoubledSigma(RandomizedSmoothing):
    """A wrong certificate: the radius formula with sigma doubled."""

    def radius(self, p_lower):
        return 2 * self.sigma * torch.special.ndtri(p_lower.clamp(max=1 - 1e-12))


def test_a_wrong_certificate_is_caught_by_the_consistency_check(noisy_cnn, mnist, tmp_path):
    defense = _DoubledSigma(**SMOOTHING)
    report = evaluate(noisy_cnn, mnist[1], attacks=[("pgd", {"steps": 10})], defenses=[defense], eps=EPS,
                      norm="l2", n=40, batch_size=40, out_dir=tmp_path, quiet=True)
    record = report.run.defenses[0]
    outcome = next(c for c in record.checks if c.check == "certificate" and c.mode == "adaptive")
    assert outcome.passed is False, outcome.reason
    assert "certificate" in report.table()
    point = record.certified.at_eps["1"]
    assert point.disproved["adaptive"] or point.certified > point.adaptive


def test_an_linf_grid_reports_the_l2_radius_each_eps_implies(noisy_cnn, mnist, tmp_path):
    defense = sk.create_defense("randomized_smoothing", **SMOOTHING)
    report = evaluate(noisy_cnn, mnist[1], attacks=["fgsm"], defenses=[defense], eps=[0.01, 0.02], n=20,
                      batch_size=20, out_dir=tmp_path, quiet=True, checks=False)
    at_eps = report.run.defenses[0].certified.at_eps
    assert at_eps["0.01"].radius == pytest.approx(0.01 * math.sqrt(784))
    assert at_eps["0.02"].certified <= at_eps["0.01"].certified
    markdown = (tmp_path / "report.md").read_text()
    assert "## Certified robustness" in markdown and "0.28" in markdown


def test_the_cli_writes_the_certified_section_and_chromium_shows_its_plot(noisy_cnn, tmp_path):
    import functools
    import http.server
    import threading

    from test_evaluate import CHROMIUM_FLAGS, _chromium, _playwright

    out = tmp_path / "run"
    smoothing = ":".join(f"{k}={v}" for k, v in SMOOTHING.items())
    code = main(["evaluate", "--model", noisy_cnn.saved_path, "--data", "mnist", "--attacks", "pgd:steps=5",
                 "--defenses", f"randomized_smoothing:{smoothing}", "--norm", "l2", "--eps", "0.5,1.0",
                 "--n", "20", "--out", str(out), "--quiet"])
    assert code == 0
    markdown, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    assert "## Certified robustness" in markdown and "plots/certified.png" in markdown
    assert "<h2>Certified robustness</h2>" in page and 'id="plot-certified"' in page
    summary = json.loads((out / "summary.json").read_text())
    assert summary["defenses"][0]["certified"]["at_eps"]["0.5"]["radius"] == 0.5

    playwright = _playwright()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(out))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with playwright.sync_playwright() as driver:
            browser = driver.chromium.launch(executable_path=_chromium(), args=CHROMIUM_FLAGS)
            page_view = browser.new_page(viewport={"width": 1280, "height": 900})
            page_view.goto(f"http://127.0.0.1:{server.server_address[1]}/report.html", wait_until="load")
            size = page_view.eval_on_selector("img#plot-certified", "e => [e.naturalWidth, e.naturalHeight]")
            browser.close()
    finally:
        server.shutdown()
    assert size[0] > 100 and size[1] > 100
