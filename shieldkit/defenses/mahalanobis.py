"""Mahalanobis outlier detector (Lee et al. 2018) on a classifier's penultimate features."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from shieldkit.defense import DetectorDefense
from shieldkit.errors import InvalidModelError, InvalidParameterError
from shieldkit.guard import ModelStateGuard, check_number, model_device

BATCH = 500  # images per forward pass


class Mahalanobis(DetectorDefense):
    """Score = the smallest Mahalanobis distance of ``x``'s features to a class mean.

    ``fit`` models the features of clean images as one Gaussian per class with a
    shared covariance (Lee et al.'s generative classifier) and sets the
    threshold at the requested false-positive rate. Clean images are grouped by
    the model's own prediction, since ``fit`` receives no labels. Lee et al.'s
    input pre-processing and layer ensemble are left out: this is the
    single-layer detector.

    Args:
        layer: name (as in ``model.named_modules()``) of the module whose output
            are the features; ``None`` takes the input of the last ``nn.Linear``
            (the penultimate features of most classifiers).
        ridge: added to the covariance's diagonal, relative to its mean variance,
            so that few samples in many dimensions still give a usable inverse.
        **common: ``bounds``, ``seed``.

    Reference:
        Lee, Lee, Lee, Shin. A Simple Unified Framework for Detecting Out-of-Distribution
        Samples and Adversarial Attacks. NeurIPS 2018.
    """

    family = "mahalanobis"
    smoke_params: ClassVar[dict[str, Any]] = {}

    def __init__(self, *, layer: str | None = None, ridge: float = 1e-3, **common):
        super().__init__(**common)
        if layer is not None and not isinstance(layer, str):
            raise InvalidParameterError(f"{self.name}: layer must be a module name or None, got {layer!r}")
        self.layer = layer
        self.ridge = check_number(self.name, "ridge", ridge, 0.0, strict=True)
        self.means: Tensor | None = None
        self.precision: Tensor | None = None

    def features(self, model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
        """Flattened features ``[B, D]`` and logits ``[B, K]`` of one batch."""
        module, use_input = self._feature_module(model)
        captured: list[Tensor] = []

        def hook(_module, inputs, output):
            captured.append(inputs[0] if use_input else output)

        handle = module.register_forward_hook(hook)
        try:
            logits = model(x)
        finally:
            handle.remove()
        if not captured:
            raise InvalidModelError(f"{self.name}: the feature layer was not called in the model's forward pass")
        return captured[-1].flatten(1).double(), logits

    def _feature_module(self, model: nn.Module) -> tuple[nn.Module, bool]:
        modules = dict(model.named_modules())
        if self.layer is not None:
            if self.layer not in modules:
                known = ", ".join(name for name in modules if name) or "(none)"
                raise InvalidParameterError(f"{self.name}: the model has no module {self.layer!r}; modules: {known}")
            return modules[self.layer], False
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise InvalidModelError(f"{self.name}: the model has no nn.Linear layer; name the feature layer with layer=")
        return linears[-1], True

    def _fit(self, model: nn.Module, x_clean: Tensor) -> None:
        device = model_device(model)
        with ModelStateGuard(model), torch.no_grad():
            parts = [self.features(model, part.to(device)) for part in x_clean.split(BATCH)]
        features = torch.cat([f for f, _ in parts]).cpu()
        labels = torch.cat([logits.argmax(dim=1) for _, logits in parts]).cpu()
        classes = labels.unique()
        means = torch.stack([features[labels == c].mean(dim=0) for c in classes])
        centred = features - means[torch.searchsorted(classes, labels)]
        covariance = centred.T @ centred / features.shape[0]
        dims = covariance.shape[0]
        scale = covariance.diagonal().mean().clamp_min(1e-12)
        covariance = covariance + (self.ridge * scale) * torch.eye(dims, dtype=covariance.dtype)
        self.means = means
        self.precision = torch.linalg.inv(covariance)

    def _score(self, model: nn.Module, x: Tensor) -> Tensor:
        if self.means is None:
            raise InvalidParameterError(f"{self.name}: call fit(model, x_clean, fpr=...) before score()")
        return torch.cat([self._score_batch(model, part) for part in x.split(BATCH)])

    def _score_batch(self, model: nn.Module, x: Tensor) -> Tensor:
        features, _ = self.features(model, x)
        means, precision = self.means.to(features.device), self.precision.to(features.device)
        if features.shape[1] != means.shape[1]:
            raise InvalidModelError(
                f"{self.name}: features have {features.shape[1]} dimensions, the fitted model {means.shape[1]}"
            )
        differences = features[:, None, :] - means[None, :, :]  # [B, classes, D]
        distances = torch.einsum("bkd,de,bke->bk", differences, precision, differences)
        return distances.amin(dim=1)
