"""Small reference classifiers, their training, and a cache of trained ones.

Every model maps pixel-space images ``[B, C, H, W]`` in ``[0, 1]`` to logits
``[B, K]``; normalisation, where wanted, is the model's first layer.
"""

from __future__ import annotations

from shieldkit.models.cache import pretrained
from shieldkit.models.training import accuracy, fit_classifier, predict
from shieldkit.models.zoo import MODELS, mlp, mnist_cnn, tiny_cnn

__all__ = [
    "MODELS",
    "accuracy",
    "fit_classifier",
    "mlp",
    "mnist_cnn",
    "predict",
    "pretrained",
    "tiny_cnn",
]
