"""Shared fixtures: real data location, thread count, and the trained classifiers several test modules use.

What the session models depend on. Each is trained from ``TEST_SEED`` (``SHIELDKIT_TEST_SEED``, default 0)
inside ``trained_deterministically()``: one torch thread and ``torch.use_deterministic_algorithms``, so on
one machine the weights are the same whatever ``OMP_NUM_THREADS`` says, and the same from run to run. What
remains machine-dependent is the CPU's arithmetic: torch picks its convolution and matrix kernels by the
instruction set (AVX2, AVX-512, NEON), whose sums round differently, and a one-epoch model amplifies that into
weights that differ by about as much as another seed's. Thresholds on these models therefore hold across
seeds, not just on seed 0: bench/bench_threshold_spread.py measures the figures the tests hold under seeds
0-3 and one and two threads (bench/results/threshold_spread.md) and each bound cites its worst case.
Attacks in the tests run at up to two threads (below), which moves their own rounding a little more.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("SHIELDKIT_DATA", str(REPO.parent / "shared" / "data"))
torch.set_num_threads(min(2, torch.get_num_threads()))

#: The seed every session model is trained from; another (``SHIELDKIT_TEST_SEED=1 make test``) stands in for
#: the model another machine's arithmetic would train.
TEST_SEED = int(os.environ.get("SHIELDKIT_TEST_SEED", "0"))


@contextlib.contextmanager
def trained_deterministically():
    """One thread and torch's deterministic algorithms while a session model trains; restored afterwards."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)


def train_mnist_model(cache_dir, seed: int = TEST_SEED):
    """``mnist_model``'s network: ``mnist_cnn`` trained one epoch on 20,000 real MNIST training images (shared
    with bench/bench_threshold_spread.py, which trains it under other seeds)."""
    from shieldkit.models.cache import pretrained

    with trained_deterministically():
        model = pretrained("mnist_cnn", data="mnist", epochs=1, n_train=20000, cache_dir=cache_dir, seed=seed)
    return model.eval()


@pytest.fixture(scope="session")
def mnist_test():
    """The real MNIST test split (10,000 images)."""
    from shieldkit.data import load

    return load("mnist", split="test")


@pytest.fixture(scope="session")
def mnist_model(tmp_path_factory):
    """A small CNN trained for one epoch on 20,000 real MNIST training images (about 98% test accuracy)."""
    return train_mnist_model(tmp_path_factory.mktemp("model-cache"))


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

    with trained_deterministically():
        torch.manual_seed(TEST_SEED)
        model = fit_classifier(mlp(hidden=(64,)), digits[1], epochs=8, seed=TEST_SEED).eval()
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

    train = load("mnist", split="train").subset(3000, seed=TEST_SEED)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TEST_SEED)
        model = mnist_cnn(width=8)
    with trained_deterministically():
        model = NoiseTraining(sigma=0.25).fit(model, train, epochs=2, batch_size=64, seed=TEST_SEED).eval()
    path = tmp_path_factory.mktemp("noisy") / "noisy_cnn.pt2"
    batch = torch.export.Dim("batch")
    torch.export.save(torch.export.export(model, (train.x[:2],), dynamic_shapes=({0: batch},)), path)
    model.saved_path = str(path)
    return model


@pytest.fixture
def fresh_registry(monkeypatch):
    """A registry re-read from the plugins (no plugin environment variables), restored afterwards."""
    from shieldkit.plugins.registry import reset_registry

    for variable in ("SHIELDKIT_PLUGINS", "SHIELDKIT_BLOCK_PLUGINS", "SHIELDKIT_NO_PLUGINS",
                     "SHIELDKIT_STRICT_PLUGINS", "SHIELDKIT_TRACE_PLUGINS"):
        monkeypatch.delenv(variable, raising=False)
    reset_registry()
    yield monkeypatch
    reset_registry()
