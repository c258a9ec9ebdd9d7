"""Training and scoring a classifier: ``fit_classifier``, ``accuracy``, ``predict``."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from shieldkit.core.seeding import seeded
from shieldkit.data.imagedata import ImageData, as_image_data
from shieldkit.infra.progress import progress_bar, progress_line, time_left

logger = logging.getLogger(__name__)

__all__ = ["accuracy", "fit_classifier", "predict"]


def fit_classifier(
    model: nn.Module,
    data: ImageData | tuple[torch.Tensor, torch.Tensor],
    *,
    epochs: int = 1,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    device: torch.device | str | None = None,
    quiet: bool = True,
) -> nn.Module:
    """Train ``model`` with Adam and cross-entropy on clean images.

    Training is deterministic for a given ``seed`` (shuffling and dropout) and
    leaves the global torch RNG as it was.

    Args:
        model: maps images in ``[0, 1]`` to logits; trained in place.
        data: ``ImageData`` or an ``(x, y)`` pair of tensors.
        epochs: passes over the data, at least 1.
        batch_size: samples per step, at least 1.
        lr: Adam's learning rate, positive.
        seed: fixes the order of the samples and the dropout masks.
        device: where to train; ``None`` keeps the model where it is.
        quiet: hide the progress bar, drawn on a terminal only; elsewhere each epoch's line (loss, time
            left) goes to the ``shieldkit.infra.progress`` logger unless ``quiet`` (at INFO either way).

    Returns:
        The same ``model``, on ``device``, in eval mode, ready to attack.

    Shape:
        x ``[N, C, H, W]``, y ``[N]``; model output ``[B, K]`` with ``K > max(y)``.
    """
    _check_model(model, "fit_classifier")
    data = as_image_data(data, "data", owner="fit_classifier", split="train")
    _check_int_at_least("fit_classifier", epochs=epochs, batch_size=batch_size)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"fit_classifier: lr must be a positive finite number, got {lr!r}")
    if len(data) == 0:
        raise ValueError("fit_classifier: data is empty")

    device = torch.device(device) if device is not None else _model_device(model)
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    with seeded(seed, device):
        model.train()
        checked_output = False
        first_started = time.perf_counter()
        for epoch in range(1, epochs + 1):
            started = time.perf_counter()
            total_loss, correct = 0.0, 0
            batches = data.batches(batch_size, shuffle=True, seed=seed + epoch)
            # a bar on a terminal only: in a log its carriage-return updates would bury everything else
            progress = progress_bar(batches, total=math.ceil(len(data) / batch_size), desc=f"epoch {epoch}/{epochs}",
                                    quiet=quiet)
            for x, y in progress:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                logits = model(x)
                if (
                    not checked_output
                ):  # one look is enough to turn a cryptic CE error into a clear one
                    _check_logits(logits, x, y, "fit_classifier")
                    checked_output = True
                loss = F.cross_entropy(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total_loss += loss.item() * len(y)
                correct += int((logits.argmax(1) == y).sum())
            left = time_left(time.perf_counter() - first_started, epoch, epochs)
            progress_line(logger, quiet, "fit_classifier epoch %d/%d: loss %.4f, train accuracy %.4f, %.1f s%s",
                          epoch, epochs, total_loss / len(data), correct / len(data), time.perf_counter() - started,
                          f", {left}" if left else "")
    model.eval()
    return model


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor | ImageData, batch_size: int = 512) -> torch.Tensor:
    """The predicted class of each image, computed in eval mode without gradients.

    The model's ``training`` flags (every module's) are restored afterwards.

    Args:
        model: maps images to logits.
        x: images (or ``ImageData``, whose ``x`` is used).
        batch_size: images per forward pass, at least 1.

    Returns:
        int64 class indices on the device of ``x``.

    Shape:
        ``[N, C, H, W] -> [N]``.
    """
    _check_model(model, "predict")
    if isinstance(x, ImageData):
        x = x.x
    _check_images(x, "predict")
    _check_int_at_least("predict", batch_size=batch_size)
    device = _model_device(model)
    predictions = []
    with _eval_mode(model):
        for start in range(0, x.shape[0], batch_size):
            logits = model(x[start : start + batch_size].to(device))
            predictions.append(logits.argmax(dim=1).to(x.device))
    if not predictions:
        return torch.empty(0, dtype=torch.int64, device=x.device)
    return torch.cat(predictions)


def accuracy(
    model: nn.Module,
    x: torch.Tensor | ImageData,
    y: torch.Tensor | None = None,
    batch_size: int = 512,
) -> float:
    """The fraction of images the model classifies correctly, in eval mode.

    Args:
        model: maps images to logits.
        x: images, or ``ImageData`` (then leave ``y`` out).
        y: true labels.
        batch_size: images per forward pass, at least 1.

    Returns:
        Accuracy in ``[0, 1]``.

    Shape:
        x ``[N, C, H, W]``, y ``[N]``.
    """
    if isinstance(x, ImageData):
        if y is not None:
            raise ValueError("accuracy: y must be left out when x is ImageData (it has its labels)")
        x, y = x.x, x.y
    if y is None:
        raise ValueError("accuracy: y (the true labels) is required when x is a tensor")
    if not isinstance(y, torch.Tensor) or y.dim() != 1:
        raise ValueError(f"accuracy: y must be a 1-D tensor of labels, got {_describe(y)}")
    _check_images(x, "accuracy")
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"accuracy: x has {x.shape[0]} images but y has {y.shape[0]} labels")
    if x.shape[0] == 0:
        raise ValueError("accuracy: x is empty")
    predicted = predict(model, x, batch_size=batch_size)
    return (predicted == y.to(predicted.device)).float().mean().item()


# -- helpers -----------------------------------------------------------------------


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode inside; every module's own ``training`` flag restored after."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, was_training in flags:
            module.training = was_training


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _check_model(model, function: str) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{function}: model must be a torch.nn.Module, got {type(model).__name__}")


def _check_images(x, function: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"{function}: x must be float images [N, C, H, W], got {_describe(x)}")


def _check_int_at_least(function: str, minimum: int = 1, **values) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{function}: {name} must be an int >= {minimum}, got {value!r}")


def _check_logits(logits, x: torch.Tensor, y: torch.Tensor, function: str) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != x.shape[0]:
        raise ValueError(
            f"{function}: the model must return logits [B, K]; for input {tuple(x.shape)} "
            f"it returned {_describe(logits)}"
        )
    if int(y.max()) >= logits.shape[1]:
        raise ValueError(
            f"{function}: label {int(y.max())} in the data but the model has only "
            f"{logits.shape[1]} outputs"
        )



def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__
