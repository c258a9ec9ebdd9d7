"""The diagnosis stage on a zoo of models with the defence hidden inside forward() (tests/support/defended_zoo.py).

The expected flags below are the independent reference: each is derived from what the
defence does to the forward and backward pass, written down next to it. Measured values
(gradient noise, zero-gradient share, forward count) are checked against hand-written loops.
"""

from __future__ import annotations

import json
import math
import random
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support import defended_zoo
from torch import nn

from shieldkit.core.errors import InvalidInputError, InvalidModelError, InvalidParameterError
from shieldkit.core.guard import compare_state, snapshot_state
from shieldkit.diagnosis import CHECKS, Diagnosis, Finding, diagnose

# Why each zoo model raises exactly these flags (the test's own reference).
EXPECTED = {
    # A trained ReLU CNN: finite logits of moderate size, deterministic, smooth at small steps.
    "undefended": (),
    # torch.round's derivative is zero everywhere: a gradient exists and is exactly zero.
    "quantize": ("zero_gradients",),
    # A comparison carries no autograd graph: the output does not require grad.
    "binarize": ("missing_gradients",),
    # heaviside has no derivative: backward raises. Piecewise constant, so not input-seeded.
    "thermometer": ("missing_gradients",),
    # A new size and offset every forward.
    "random_resize_pad": ("random_forward",),
    # Margins around 1e4 x 4: exp(-margin) underflows, so softmax saturates and the
    # cross-entropy gradient of every correctly classified sample is exactly zero.
    "scaled_logits": ("saturated_logits", "zero_gradients"),
    # Rows are non-negative and sum to one.
    "softmax_output": ("probability_outputs",),
    # Fresh noise every forward.
    "gaussian_noise": ("random_forward",),
    # F.dropout(training=True) stays random in eval mode.
    "active_dropout": ("random_forward",),
    # x.detach().numpy() cuts the graph.
    "numpy_round_trip": ("missing_gradients",),
    # Same input, same noise (repeats agree); any other input, other noise (no shrinking).
    "input_seeded_noise": ("input_seeded_randomness",),
    # Smooth at 1e-5 (so not input-seeded) but sin(1000x) oscillates within an attack's step.
    "shattered_gradients": ("shattered_gradients",),
    # log of negative logits is NaN, and so is every gradient through it.
    "nan_logits": ("nonfinite_outputs", "nonfinite_gradients"),
    # Fresh noise every forward, then rounding: random, and the gradient through round is exactly zero.
    "noisy_rounding": ("random_forward", "zero_gradients"),
    # Mixed with a random other image every forward; differentiable.
    "mixup_inference": ("random_forward",),
    # Quantised kernels have no autograd (no input gradient); the int8 Linear modules have a float twin.
    "int8_dynamic": ("missing_gradients", "deployed_precision"),
    # bfloat16 parameters: autograd flows through the casts, but the model computes in reduced precision.
    "bfloat16_deployment": ("deployed_precision",),
    # An inference tensor has no graph; the decorated forward has a twin without the decorator.
    "inference_mode_forward": ("missing_gradients", "deployed_precision"),
    # The backward returns random signs: a step along it changes the loss nothing like predicted.
    "lying_backward": ("shattered_gradients",),
}


@pytest.fixture(scope="module")
def base():
    """A narrow CNN trained for one epoch on 4,000 real MNIST training images (about 90% accurate)."""
    from shieldkit.data import load
    from shieldkit.models import fit_classifier, mnist_cnn

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = mnist_cnn(width=8)
    train = load("mnist", split="train").subset(4000, seed=0)
    return fit_classifier(model, train, epochs=1, batch_size=32, seed=0).eval()


@pytest.fixture(scope="module")
def probe_data(mnist_test):
    data = mnist_test.subset(64, seed=1)
    return data.x, data.y


@pytest.fixture(scope="module")
def diagnoses(base, probe_data):
    x, y = probe_data
    return {name: diagnose(build(base), x, y) for name, build in defended_zoo.ZOO.items()}


def test_the_zoo_covers_the_issue_and_this_reference_covers_the_zoo():
    assert set(defended_zoo.ZOO) == set(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_zoo_model_gets_exactly_its_flags(diagnoses, name):
    diagnosis = diagnoses[name]
    details = "; ".join(f"{f.check}: {f.detail}" for f in diagnosis.findings)
    assert diagnosis.flags == EXPECTED[name], details
    assert tuple(f.check for f in diagnosis.findings) == CHECKS
    assert diagnosis.samples == 64


def test_the_base_is_accurate_enough_for_the_reference(base, probe_data):
    x, y = probe_data
    with torch.no_grad():
        assert (base(x).argmax(1) == y).float().mean() >= 0.8


def test_gradient_noise_matches_a_hand_written_loop(base, probe_data):
    """Same seed, same draws: 8 cross-entropy gradients of the noisy model, spread by hand."""
    x, y = probe_data
    model = defended_zoo.GaussianNoise(base, sigma=0.1).eval()
    diagnosis = diagnose(model, x, y, seed=3, repeats=8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        grads = []
        for _ in range(8):
            inputs = x.clone().requires_grad_(True)
            loss = F.cross_entropy(model(inputs), y, reduction="sum")
            grads.append(torch.autograd.grad(loss, inputs)[0].flatten(1).double())
    grads = torch.stack(grads)
    mean = grads.mean(0)
    expected = ((grads - mean).norm(dim=2).mean(0) / mean.norm(dim=1)).mean().item()
    assert diagnosis.gradient_noise == pytest.approx(expected, rel=1e-6)
    assert diagnosis.gradient_noise > 0.1
    assert diagnose(base, x, y).gradient_noise == 0.0


def test_zero_gradient_share_matches_a_hand_count(diagnoses, base, probe_data):
    """On logits x1e4, the samples whose cross-entropy gradient is exactly zero, counted by hand."""
    x, y = probe_data
    inputs = x.clone().requires_grad_(True)
    loss = F.cross_entropy(base(inputs) * 1e4, y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, inputs)
    expected = (grad.flatten(1).abs().amax(1) == 0).float().mean().item()
    finding = diagnoses["scaled_logits"].finding("zero_gradients")
    assert finding.share == pytest.approx(expected)
    assert expected > 0.5


def test_forwards_are_counted_and_few(base, probe_data):
    x, y = probe_data
    calls = []
    handle = base.register_forward_hook(lambda *args: calls.append(1))
    try:
        diagnosis = diagnose(base, x, y, repeats=5)
    finally:
        handle.remove()
    assert diagnosis.forwards == len(calls) == 5 + 8


def test_model_state_and_random_states_are_restored(base, probe_data):
    x, y = probe_data
    model = nn.Sequential(base, nn.Dropout(0.5), nn.BatchNorm1d(10))
    model.train()  # dropout and batch statistics active: the diagnosis runs it in eval mode, then restores
    model[2].weight.grad = torch.ones(10)
    before = snapshot_state(model)
    torch.manual_seed(123)
    np.random.seed(7)
    random.seed(5)
    states = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    diagnosis = diagnose(model, x, y, seed=None)
    assert compare_state(before, snapshot_state(model)) == []
    assert model.training and model[1].training
    assert torch.equal(torch.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1])
    assert random.getstate() == states[2]
    assert "random_forward" not in diagnosis.flags  # eval mode: dropout off, as attacks see it


def test_runs_in_the_models_dtype(base, probe_data):
    x, y = probe_data
    model = defended_zoo.Undefended(base).double()
    try:
        assert diagnose(model, x, y).flags == ()
    finally:
        base.float()


def test_json_round_trip(diagnoses):
    for diagnosis in (diagnoses["undefended"], diagnoses["binarize"]):
        text = json.dumps(diagnosis.to_json(), allow_nan=False)  # NaN statistics are written as null
        back = Diagnosis.from_json(json.loads(text))
        assert back.to_json() == diagnosis.to_json()
        assert back.flags == diagnosis.flags
    finding = diagnoses["quantize"].finding("zero_gradients")
    assert Finding.from_json(json.loads(json.dumps(finding.to_json()))) == finding
    assert math.isnan(Diagnosis.from_json(diagnoses["binarize"].to_json()).finding("zero_gradients").measured)


def test_the_docs_table_lists_exactly_the_checks():
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs" / "diagnosis.md").read_text()
    rows = re.findall(r"^\| `([a-z_]+)` \|", page, flags=re.MULTILINE)
    assert tuple(rows) == CHECKS


def test_a_diagnosis_recorded_before_a_check_existed_reads_it_as_not_measured(diagnoses):
    data = diagnoses["int8_dynamic"].to_json()
    data["findings"] = [f for f in data["findings"] if f["check"] != "deployed_precision"]
    back = Diagnosis.from_json(data)
    assert tuple(f.check for f in back.findings) == CHECKS
    finding = back.finding("deployed_precision")
    assert not finding.found and math.isnan(finding.measured) and finding.detail.startswith("not measured")
    assert back.flags == ("missing_gradients",)


class _Counting(nn.Module):
    def __init__(self, base):
        super().__init__()
        self.base, self.calls = base, 0

    def forward(self, x):
        self.calls += 1
        return self.base(x)


@pytest.mark.parametrize("change, error, argument", [
    ({"model": "not a model"}, InvalidModelError, "model"),
    ({"bounds": (1.0, 0.0)}, InvalidParameterError, "bounds"),
    ({"seed": -1}, InvalidParameterError, "seed"),
    ({"seed": 1.5}, InvalidParameterError, "seed"),
    ({"repeats": 1}, InvalidParameterError, "repeats"),
    ({"repeats": True}, InvalidParameterError, "repeats"),
    ({"max_samples": 0}, InvalidParameterError, "max_samples"),
    ({"x": "images"}, InvalidInputError, "x"),
    ({"x_scale": 2.0}, InvalidInputError, "x"),
    ({"y": torch.zeros(3, dtype=torch.long)}, InvalidInputError, "y"),
    ({"y": torch.zeros(64)}, InvalidInputError, "y"),
])
def test_bad_arguments_give_one_line_errors_naming_them_before_any_forward(base, probe_data, change, error, argument):
    x, y = probe_data
    model = _Counting(base)
    arguments = {"model": model, "x": x * change.pop("x_scale", 1.0), "y": y, **change}
    with pytest.raises(error) as raised:
        diagnose(arguments.pop("model"), arguments.pop("x"), arguments.pop("y"), **arguments)
    message = str(raised.value)
    assert "\n" not in message and argument in message
    assert model.calls == 0


def test_labels_beyond_the_models_classes_are_refused(base, probe_data):
    x, y = probe_data
    labels = torch.arange(64) % 5
    with pytest.raises(InvalidInputError, match=r"^y has labels in \[0, 4\] but the model has 3 classes"):
        diagnose(nn.Sequential(base, nn.Linear(10, 3)), x, labels)


@pytest.mark.slow
def test_a_pgd_trained_model_raises_nothing(probe_data, tmp_path_factory):
    """Slow (trains a PGD CNN unless $SHIELDKIT_CACHE holds it): the robust model flags nothing."""
    import os
    from pathlib import Path

    cache = Path(os.environ.get("SHIELDKIT_CACHE", tmp_path_factory.mktemp("pgd"))) / "zoo"
    model = defended_zoo.pgd_trained_cnn(cache)
    x, y = probe_data
    assert diagnose(model, x, y).flags == ()
