"""Models as users deploy them, built the way torch's documentation does: shared by the tests of the twin, the
attack contract on deployed models and the evaluation of deployed models. A helper module, not a test file."""

from __future__ import annotations

import warnings

import torch
from torch import nn


class InferenceMode(nn.Module):
    """A deployment wrapper written for speed: the whole forward under ``torch.inference_mode``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @torch.inference_mode()
    def forward(self, x):
        return self.model(x)


def dynamic_int8(model: nn.Module) -> nn.Module:
    """``model``'s Linear layers dynamically quantised to int8 (a copy; ``model`` is left as it is), in eval mode."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        return torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8).eval()
