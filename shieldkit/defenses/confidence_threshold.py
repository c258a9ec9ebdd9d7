"""Reject inputs the model is unsure about: a threshold on the top softmax probability."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shieldkit.core.defense import DetectorDefense
from shieldkit.core.validation import check_number

BATCH = 500  # images per forward pass when scoring


class ConfidenceThreshold(DetectorDefense):
    """Score = ``1 - max_k softmax(f(x) / temperature)_k``; inputs above the fitted threshold are rejected.

    The baseline detector of Hendrycks and Gimpel: minimal-perturbation attacks
    (DeepFool, C&W with ``confidence=0``) stop just across the decision boundary,
    where the top probability is low. High-confidence attacks (PGD, C&W with a
    large ``confidence``) pass it by design, so it is a baseline, not a defence.

    Args:
        temperature: softmax temperature, ``> 0`` (Liang et al.'s ODIN uses 1000).
        **common: ``bounds``, ``seed``.

    Reference:
        Hendrycks, Gimpel. A Baseline for Detecting Misclassified and Out-of-Distribution
        Examples in Neural Networks. ICLR 2017.
    """

    family = "confidence_threshold"

    def __init__(self, *, temperature: float = 1.0, **common):
        super().__init__(**common)
        self.temperature = check_number(self.name, "temperature", temperature, 0.0, strict=True)

    def _score(self, model: nn.Module, x: Tensor) -> Tensor:
        parts = [1 - F.softmax(model(part) / self.temperature, dim=1).amax(dim=1) for part in x.split(BATCH)]
        return torch.cat(parts)
