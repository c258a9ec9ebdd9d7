"""Shared fixtures: real data location, thread count, and the trained classifiers several test modules use."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("SHIELDKIT_DATA", str(REPO.parent / "shared" / "data"))
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def mnist_test():
    """The real MNIST test split (10,000 images)."""
    from shieldkit.data import load

    return load("mnist", split="test")


@pytest.fixture(scope="session")
def mnist_model(tmp_path_factory):
    """A small CNN trained for one epoch on 20,000 real MNIST training images (about 98% test accuracy)."""
    from shieldkit.models.cache import pretrained

    model = pretrained("mnist_cnn", data="mnist", epochs=1, n_train=20000,
                       cache_dir=tmp_path_factory.mktemp("model-cache"), seed=0)
    return model.eval()


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's bundled digits at 28x28: (test, train)."""
    from shieldkit.data import load

    return load("digits", split="test"), load("digits", split="train")


@pytest.fixture(scope="session")
def digits_mlp(digits, tmp_path_factory):
    """A small MLP trained on the 1,437 digits training images (about 95% test accuracy, seconds to train);
    ``saved_path`` is the model saved as a ``torch.export`` program (a safe format: loading runs no code)."""
    from shieldkit.models import fit_classifier, mlp

    torch.manual_seed(0)
    model = fit_classifier(mlp(hidden=(64,)), digits[1], epochs=8, seed=0).eval()
    path = tmp_path_factory.mktemp("model") / "mlp.pt2"
    batch = torch.export.Dim("batch")
    torch.export.save(torch.export.export(model, (digits[0].x[:2],), dynamic_shapes=({0: batch},)), path)
    model.saved_path = str(path)
    return model


@pytest.fixture(scope="session")
def noisy_cnn(tmp_path_factory):
    """A narrow CNN trained under N(0, 0.25^2) input noise (``noise_training``) on 3,000 seeded real MNIST
    training images for 2 epochs: the base model randomised smoothing needs. ``saved_path`` as above
    (a ``torch.export`` program)."""
    from shieldkit.data import load
    from shieldkit.defenses import NoiseTraining
    from shieldkit.models import mnist_cnn

    train = load("mnist", split="train").subset(3000, seed=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = mnist_cnn(width=8)
    model = NoiseTraining(sigma=0.25).fit(model, train, epochs=2, batch_size=64, seed=0).eval()
    path = tmp_path_factory.mktemp("noisy") / "noisy_cnn.pt2"
    batch = torch.export.Dim("batch")
    torch.export.save(torch.export.export(model, (train.x[:2],), dynamic_shapes=({0: batch},)), path)
    model.saved_path = str(path)
    return model


@pytest.fixture
def fresh_registry(monkeypatch):
    """A registry re-read from the plugins (no plugin environment variables), restored afterwards."""
    from shieldkit.registry import reset_registry

    for variable in ("SHIELDKIT_PLUGINS", "SHIELDKIT_BLOCK_PLUGINS", "SHIELDKIT_NO_PLUGINS",
                     "SHIELDKIT_STRICT_PLUGINS", "SHIELDKIT_TRACE_PLUGINS"):
        monkeypatch.delenv(variable, raising=False)
    reset_registry()
    yield monkeypatch
    reset_registry()
