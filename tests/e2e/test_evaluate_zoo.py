"""The default evaluation, told nothing, on every defended model of the zoo (issue 13's acceptance test).

Each model of ``tests/support/defended_zoo.py`` hides its defence inside ``forward()``. It goes
through ``shieldkit.evaluate(model, data, eps=[0.1, 0.3])`` with every default (the
``standard`` suite, the diagnosis, the remedies it chooses, the checklist) and must
report, at both budgets, a robust accuracy at most 5 points above the hand-written
adaptive attack of ``tests/support/zoo_references.py`` (BPDA / EOT / margin loss, written
knowing the defence; for a randomised model its expected accuracy, within 5 points either way
of the reference's over 16 fresh draws), name in its results the remedies that got it there, and raise
no flag on the PGD-trained model.

The base classifier is the MLP of test_escalation.py (cheap: the standard suite's
thousands of forwards per sample cost seconds). The models whose evaluation takes
longest (smoothing's 64 forwards per gradient through a cut gradient; EOT over up to
32 draws for the randomised ones) and the PGD-trained model (trained here unless
``$SHIELDKIT_CACHE`` holds it) carry the ``slow`` marker: ``make test`` runs the
other eleven (undefended, thermometer, shattered gradients, scaled logits, softmax
output, input-seeded noise, noisy rounding, int8, bfloat16, inference_mode, lying backward),
``python -m pytest -m slow tests/e2e/test_evaluate_zoo.py`` the rest.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from support import defended_zoo
from support.zoo_references import FRESH_DRAWS, RANDOM_JUDGED, REFERENCES, correct, reference_attack

from shieldkit.data import ImageData
from shieldkit.evaluation import evaluate

N_IMAGES = 100
EPSILONS = (0.1, 0.3)
#: issue 13: "within 5 points of the reference" (the same 100 images for both, so no sampling margin)
MARGIN = 0.05
#: the zoo models whose default evaluation takes minutes here (see the module docstring)
#: (measured on 2 cores, one thread: 33-42 s each for the first three, 9-14 s for the EOT ones, where the
#: other six take 7-11 s; the PGD-trained model's test trains it, 295 s)
SLOW = {"numpy_round_trip", "binarize", "quantize", "random_resize_pad", "gaussian_noise", "active_dropout",
        "mixup_inference"}  # 169 s: Square averaging 8 draws of a forward that mixes 4 images (bench/results/zoo.md)
@pytest.fixture(scope="module")
def base():
    from shieldkit.models.cache import pretrained

    return pretrained("mlp", data="mnist", epochs=2, n_train=10000, seed=0).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def images(mnist_test):
    return mnist_test.x[:N_IMAGES], mnist_test.y[:N_IMAGES]


def _evaluate(model, images, out: Path):
    x, y = images
    return evaluate(model, ImageData(x, y, name="mnist", split="test"), eps=list(EPSILONS), out_dir=out,
                    quiet=True, batch_size=N_IMAGES)


def _zoo_case(name: str):
    return pytest.param(name, marks=[pytest.mark.slow] if name in SLOW else [])


@pytest.mark.parametrize("name", [_zoo_case(name) for name in REFERENCES])
def test_the_default_evaluation_reaches_the_hand_written_adaptive_attack(base, images, name, tmp_path):
    x, y = images
    model = defended_zoo.ZOO[name](base).eval()
    report = _evaluate(model, images, tmp_path)
    record = report.run.defense("none")
    remedies = [note.name for note in record.diagnosis.remedies]
    if name == "undefended":
        assert record.diagnosis.diagnosis.flags == () and remedies == []
    else:  # chosen with no hint, and written into the results and the report
        # (the score-based fallback is the suite's own Square here, so it is not listed again, except on a
        # randomised model, where it runs on the loss averaged over draws)
        assert record.diagnosis.diagnosis.flags and remedies, remedies
        assert ("score_based" in remedies) == (name in RANDOM_JUDGED), remedies
        rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
        assert [n["name"] for r in rows if r["type"] == "diagnosis" for n in r["remedies"]] == remedies
        markdown = (tmp_path / "report.md").read_text()
        assert "## Diagnosis" in markdown and all(remedy in markdown for remedy in remedies)
    differentiate, draws = REFERENCES[name]
    forward = model if differentiate is None else differentiate(base)
    randomised = name in RANDOM_JUDGED
    assert (record.judging_draws > 1) == randomised, record.judging_draws
    for eps in EPSILONS:
        if randomised:  # the expected accuracy at the reference's points, over fresh draws
            reference = reference_attack(forward, model, x, y, eps, draws, 4, fresh_draws=FRESH_DRAWS).mean().item()
        else:
            reference = reference_attack(forward, model, x, y, eps, draws, 1).mean().item()
        reported = report.robust_accuracy(eps=eps)
        broke = {attack: count for attack, count in record.eps[f"{eps:g}"].broken_by.items() if count}
        assert reported <= reference + MARGIN, (name, eps, reported, reference, broke)
        if randomised:  # an expected accuracy, not a worst case over single draws: not far below either (issue 23)
            assert reported >= reference - MARGIN, (name, eps, reported, reference, broke)


@pytest.mark.slow
def test_a_pgd_trained_model_is_evaluated_at_least_as_hard_as_pgd_100_and_flagged_for_nothing(images, tmp_path):
    """A genuinely robust model: nothing to diagnose, nothing to flag, and a number no higher than a
    hand-written 100-step margin-loss PGD's (cached PGD training on 10,000 real MNIST images)."""
    cache = Path(os.environ.get("SHIELDKIT_CACHE", tmp_path)) / "zoo"
    model = defended_zoo.pgd_trained_cnn(cache).requires_grad_(False)
    x, y = images
    report = _evaluate(model, images, tmp_path / "run")
    record = report.run.defense("none")
    assert record.diagnosis.diagnosis.flags == ()
    failed = [f"{c.check} ({c.mode}): {c.reason}" for c in record.checks if c.passed is False]
    assert failed == []
    for eps in EPSILONS:
        reference = reference_attack(model, model, x, y, eps, 1, 1, steps=100).mean().item()
        assert report.robust_accuracy(eps=eps) <= reference + MARGIN, (eps, reference)
    with torch.no_grad():
        assert correct(model, x, y).mean().item() >= 0.9  # the model is a real one
