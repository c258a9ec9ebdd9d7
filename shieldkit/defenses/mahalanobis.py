"""Mahalanobis outlier detector (Lee et al. 2018) on a classifier's penultimate features."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from shieldkit.core.defense import DetectorDefense
from shieldkit.core.errors import InvalidModelError, InvalidParameterError
from shieldkit.core.guard import ModelStateGuard
from shieldkit.core.validation import check_number, model_device

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
        shrinkage: weight of the scaled identity mixed into the covariance, in
            ``[0, 1]``; ``None`` picks it from the data (Ledoit and Wolf 2004), which
            keeps the inverse sane when there are few clean samples per dimension.
        **common: ``bounds``, ``seed``.

    Reference:
        Lee, Lee, Lee, Shin. A Simple Unified Framework for Detecting Out-of-Distribution
        Samples and Adversarial Attacks. NeurIPS 2018.
        Ledoit, Wolf. A well-conditioned estimator for large-dimensional covariance
        matrices. Journal of Multivariate Analysis, 2004.
    """

    family = "mahalanobis"

    def __init__(self, *, layer: str | None = None, shrinkage: float | None = None, **common):
        super().__init__(**common)
        if layer is not None and not isinstance(layer, str):
            raise InvalidParameterError(f"{self.name}: layer must be a module name or None, got {layer!r}")
        self.layer = layer
        if shrinkage is not None:
            check_number(self.name, "shrinkage", shrinkage, 0.0, 1.0)
        self.shrinkage = shrinkage
        self.means: Tensor | None = None
        self.precision: Tensor | None = None
        self._held_out: Tensor | None = None

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

    def fit(self, model: nn.Module, x_clean: Tensor, fpr: float = 0.05) -> Mahalanobis:
        """Fit the class Gaussians on ``x_clean`` and the threshold at false-positive rate ``fpr``.

        The threshold comes from cross-fitting: each half of ``x_clean`` is scored
        by Gaussians fitted on the other half. In-sample distances are too small
        (each image pulls the means and covariance towards itself), so a threshold
        fitted on them flags far more than ``fpr`` of new clean images.
        """
        super().fit(model, x_clean, fpr)
        if self._held_out is not None:
            self.threshold = torch.quantile(self._held_out.float(), 1.0 - fpr).item()
        return self

    def _fit(self, model: nn.Module, x_clean: Tensor) -> None:
        device = model_device(model)
        with ModelStateGuard(model), torch.no_grad():
            parts = [self.features(model, part.to(device)) for part in x_clean.split(BATCH)]
        features = torch.cat([f for f, _ in parts]).cpu()
        labels = torch.cat([logits.argmax(dim=1) for _, logits in parts]).cpu()
        self.means, self.precision = self._gaussians(features, labels)
        self._held_out = None
        count = features.shape[0]
        if count >= 4:
            order = torch.randperm(count, generator=torch.Generator().manual_seed(self.seed or 0))
            halves = (order[: count // 2], order[count // 2:])
            held_out = torch.empty(count, dtype=features.dtype)
            for fitted, scored in (halves, halves[::-1]):
                means, precision = self._gaussians(features[fitted], labels[fitted])
                held_out[scored] = _distances(features[scored], means, precision)
            self._held_out = held_out

    def _gaussians(self, features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Class means ``[classes, D]`` and the precision of the shared covariance ``[D, D]``."""
        classes = labels.unique()
        means = torch.stack([features[labels == c].mean(dim=0) for c in classes])
        centred = features - means[torch.searchsorted(classes, labels)]
        return means, torch.linalg.inv(shrunk_covariance(centred, self.shrinkage))

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
        return _distances(features, means, precision)


def _distances(features: Tensor, means: Tensor, precision: Tensor) -> Tensor:
    """The smallest squared Mahalanobis distance of each feature vector to a class mean ``[B]``."""
    differences = features[:, None, :] - means[None, :, :]  # [B, classes, D]
    return torch.einsum("bkd,de,bke->bk", differences, precision, differences).amin(dim=1)


def shrunk_covariance(centred: Tensor, shrinkage: float | None = None) -> Tensor:
    """``(1 - a) * S + a * mean(diag(S)) * I`` for centred samples ``[N, D]``; ``a`` by Ledoit-Wolf when ``None``."""
    count, dims = centred.shape
    sample = centred.T @ centred / count
    scale = sample.diagonal().mean().clamp_min(1e-12)
    identity = torch.eye(dims, dtype=sample.dtype, device=sample.device)
    if shrinkage is None:
        spread = (sample - scale * identity).square().sum() / dims
        # Mean squared distance of the one-sample estimates x x^T from S, divided by N.
        noise = (centred.square().sum(dim=1).square().sum() / count - sample.square().sum()) / (count * dims)
        shrinkage = 1.0 if spread <= 0 else float((noise / spread).clamp(0.0, 1.0))
    shrinkage = max(shrinkage, 1e-6)  # always invertible
    return (1 - shrinkage) * sample + shrinkage * scale * identity
