"""The evaluation diagnoses the model it is handed and escalates by itself (shieldkit is told nothing).

A defence hidden inside ``forward()`` (rounding the input, a softmax at the end)
is what a user hands over. The evaluation must find it (a diagnosis row before any
attack), choose a remedy with no hint, and report a robust accuracy near what a
hand-written adaptive attack written here, knowing the defence, reaches.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from support.run_folders import assert_rebuilds_from_disk
from torch import nn

from shieldkit.evaluation import evaluate
from shieldkit.evaluation.records import to_json

EPS = 0.3
N = 60
#: a binomial margin on N images: one standard error of a difference of two accuracies near 0.2 is ~0.07
MARGIN = 0.1


class Quantized(nn.Module):
    """Rounds each pixel to 4 levels before the classifier: autograd's gradient is zero everywhere."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base

    def forward(self, x):
        return self.base(torch.round(x * 3) / 3)


class Probabilities(nn.Module):
    """Returns softmax probabilities instead of logits."""

    def __init__(self, base: nn.Module):
        super().__init__()
        self.base = base

    def forward(self, x):
        return F.softmax(self.base(x), dim=1)


def bpda_reference(base: nn.Module, x, y, eps: float, steps: int = 40) -> float:
    """Hand-written BPDA (identity backward through the rounding) L-inf PGD on the margin loss, best iterate kept."""
    torch.manual_seed(0)
    quantize = lambda images: torch.round(images * 3) / 3  # noqa: E731
    robust = torch.ones(len(x), dtype=torch.bool)
    x_adv = (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        logits = base(x_adv + (quantize(x_adv) - x_adv).detach())
        own = logits.gather(1, y[:, None]).squeeze(1)
        other = logits.scatter(1, y[:, None], float("-inf")).amax(1)
        (gradient,) = torch.autograd.grad((other - own).sum(), x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + 2.5 * eps / steps * gradient.sign(), x - eps), x + eps).clamp(0, 1)
        with torch.no_grad():
            robust &= base(quantize(x_adv)).argmax(1) == y
    return robust.float().sum().item() / len(x)


@pytest.fixture(scope="module")
def sample(digits):
    return digits[0].subset(N, seed=1)


def _run(model, sample, out, **options):
    return evaluate(model, sample, attacks=["fgsm", ("pgd", {"steps": 10})], eps=[EPS], out_dir=out, quiet=True,
                    batch_size=N, suite="quick", **options)


def _rows(out, kind):
    return [row for row in map(json.loads, (out / "results.jsonl").read_text().splitlines()) if row["type"] == kind]


def test_a_plain_model_is_diagnosed_clean_and_gets_no_remedy(digits_mlp, sample, tmp_path):
    report = _run(digits_mlp, sample, tmp_path)
    (row,) = _rows(tmp_path, "diagnosis")
    assert row["target"] == "deployed" and all(not f["found"] for f in row["diagnosis"]["findings"])
    assert row["remedies"] == []
    record = report.run.defense("none")
    assert record.diagnosis is not None and record.diagnosis.diagnosis.flags == ()
    assert not record.adaptive_stage  # nothing to escalate: adaptive is naive
    broken = record.eps[f"{EPS:g}"].broken_by
    assert set(broken) == {"fgsm", "pgd"} and sum(broken.values()) == round((record.clean_accuracy
                                                                              - report.robust_accuracy()) * N)


def test_rounding_inside_forward_is_found_and_escalated_to_a_hand_written_bpda(digits_mlp, sample, tmp_path,
                                                                               tmp_path_factory):
    model = Quantized(digits_mlp).eval()
    report = _run(model, sample, tmp_path)
    record = report.run.defense("none")
    assert "zero_gradients" in record.diagnosis.diagnosis.flags
    remedies = [note.name for note in record.diagnosis.remedies]
    assert remedies[0] == "auto_bpda" and remedies[-1] == "score_based"
    x, y = sample.x, sample.y
    reference = bpda_reference(digits_mlp, x, y, EPS)
    naive, adaptive = report.robust_accuracy(mode="naive"), report.robust_accuracy(mode="adaptive")
    assert naive >= reference + 0.2, (naive, reference)  # the naive number is the masked one
    assert adaptive <= reference + MARGIN, (adaptive, reference)
    broken = record.eps[f"{EPS:g}"].broken_by
    assert broken["apgd via auto_bpda"] > 0, broken
    markdown = (tmp_path / "report.md").read_text()
    assert "## Diagnosis" in markdown and "zero_gradients" in markdown
    assert "## Attack that broke it" in markdown and "apgd via auto_bpda" in markdown
    assert_rebuilds_from_disk(tmp_path, tmp_path_factory.mktemp("rebuilt"))  # remedies come from plan.json


def test_probability_outputs_are_found_and_attacked_on_log_probabilities(digits_mlp, sample, tmp_path):
    model = Probabilities(digits_mlp).eval()
    report = _run(model, sample, tmp_path / "probabilities")
    reference = _run(digits_mlp, sample, tmp_path / "logits")
    record = report.run.defense("none")
    assert "probability_outputs" in record.diagnosis.diagnosis.flags
    assert "log_probabilities" in [note.name for note in record.diagnosis.remedies]
    # the same classifier: with the remedy the number is the logits model's, up to the margin
    assert report.robust_accuracy() <= reference.robust_accuracy() + MARGIN


def test_a_resumed_run_keeps_its_diagnosis_and_remedies(digits_mlp, sample, tmp_path):
    model = Quantized(digits_mlp).eval()
    first = _run(model, sample, tmp_path)
    again = _run(model, sample, tmp_path, resume=True)
    assert len(_rows(tmp_path, "diagnosis")) == 1
    rerun, original = again.run.defense("none").diagnosis, first.run.defense("none").diagnosis
    assert json.dumps(to_json(rerun)) == json.dumps(to_json(original))  # as written (a NaN measurement included)
    assert again.robust_accuracy() == first.robust_accuracy()


def test_more_steps_and_restarts_that_still_break_samples_flag_an_unconverged_suite(digits_mlp, sample, tmp_path):
    """Carlini et al.'s checklist: a one-step PGD has not converged; the check re-runs it with twice the
    steps and a restart on the still-robust samples and says so. A hand-written 20-step PGD shows the
    gap is real."""
    eps = 0.1
    weak = evaluate(digits_mlp, sample, attacks=[("pgd", {"steps": 1, "step_size": 0.02})], eps=[eps],
                    out_dir=tmp_path / "weak", quiet=True, batch_size=N, checks=True)
    (row,) = [r for r in _rows(tmp_path / "weak", "check") if r["check"] == "more_effort|naive"]
    assert (row["steps"], row["restarts"], row["attack"]) == (2, 2, "pgd") and row["fooled"]
    outcome = next(c for c in weak.run.defense("none").checks if c.check == "more_effort" and c.mode == "naive")
    assert outcome.passed is False and "has not converged" in outcome.reason
    x, y = sample.x, sample.y
    x_adv = x.clone()
    for _ in range(20):  # the reference: hand-written L-inf PGD, 20 steps of eps/8
        x_adv.requires_grad_(True)
        (gradient,) = torch.autograd.grad(F.cross_entropy(digits_mlp(x_adv), y), x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + eps / 8 * gradient.sign(), x - eps), x + eps).clamp(0, 1)
    with torch.no_grad():
        reference = (digits_mlp(x_adv).argmax(1) == y).float().mean().item()
    assert weak.robust_accuracy() > reference + 0.05  # the flagged number really is too high
    strong = evaluate(digits_mlp, sample, attacks=[("pgd", {"steps": 40})], eps=[eps], out_dir=tmp_path / "strong",
                      quiet=True, batch_size=N, checks=True)
    outcome = next(c for c in strong.run.defense("none").checks if c.check == "more_effort" and c.mode == "naive")
    assert outcome.passed is True, outcome.reason
