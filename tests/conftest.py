"""Shared fixtures: real data location, thread count, and one trained MNIST classifier per session."""

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
