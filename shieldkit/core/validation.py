"""Checks on everything a user hands shieldkit: images, labels, model outputs, placement, parameters.

Each check raises a one-line error naming the argument and what was wrong, before
any compute; the attack and defence base classes call them so algorithms stay short.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from shieldkit.core.errors import InvalidInputError, InvalidModelError, InvalidParameterError

BOUNDS_TOLERANCE = 1e-6
#: Channel counts of grey, RGB and RGBA images: a batch whose last dimension is one of these while the
#: two before it are larger is channels-last ``[B, H, W, C]`` (an image 1, 3 or 4 pixels wide is not one).
IMAGE_CHANNELS = (1, 3, 4)


def rounding_tolerance(dtype: torch.dtype, bounds: tuple[float, float]) -> float:
    """How far float error in ``dtype`` can move a pixel: a few ulps at the largest magnitude in ``bounds``.

    2e-3 in float16 and 3e-2 in bfloat16 on [0, 1], against 5e-7 in float32: the attack
    contract's tolerances take the larger of this and their float32 values.
    """
    return 4 * torch.finfo(dtype).eps * max(1.0, abs(bounds[0]), abs(bounds[1]))


def check_bounds(bounds: Sequence[float], owner: str = "") -> tuple[float, float]:
    """Validate ``(low, high)`` pixel bounds."""
    prefix = f"{owner}: " if owner else ""
    try:
        low, high = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"{prefix}bounds must be a pair (low, high), got {bounds!r}") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise InvalidParameterError(f"{prefix}bounds must be finite with low < high, got {bounds!r}")
    return low, high


def check_images(x: object, bounds: tuple[float, float], name: str = "x") -> Tensor:
    """Check a batch of images: a finite float tensor ``[B, C, H, W]`` inside ``bounds``."""
    if not isinstance(x, Tensor):
        raise InvalidInputError(f"{name} must be a torch.Tensor of images [B, C, H, W], got {type(x).__name__}")
    if not x.is_floating_point():
        raise InvalidInputError(
            f"{name} must be a floating-point tensor in {bounds}, got dtype {x.dtype}; "
            "for uint8 images divide by 255 first"
        )
    if x.dim() != 4:
        raise InvalidInputError(f"{name} must have shape [B, C, H, W] (4 dimensions), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise InvalidInputError(f"{name} is an empty batch (shape {tuple(x.shape)})")
    if x.shape[3] in IMAGE_CHANNELS and min(x.shape[1], x.shape[2]) > max(IMAGE_CHANNELS):
        # Caught here because the model would fail on it with a torch error that names neither x nor the layout.
        raise InvalidInputError(
            f"{name} looks channels-last (NHWC, shape {tuple(x.shape)}); images must be [B, C, H, W]: "
            f"pass {name}.permute(0, 3, 1, 2)"
        )
    # One pass over the batch: NaN propagates into the extrema, and so does inf.
    found_low, found_high = (value.item() for value in torch.aminmax(x.detach()))
    if not (math.isfinite(found_low) and math.isfinite(found_high)):
        bad = (~torch.isfinite(x)).sum().item()
        raise InvalidInputError(f"{name} contains {bad} non-finite values (NaN or inf)")
    low, high = bounds
    if found_low < low - BOUNDS_TOLERANCE or found_high > high + BOUNDS_TOLERANCE:
        raise InvalidInputError(
            f"{name} has values in [{found_low:.4g}, {found_high:.4g}], outside bounds {bounds}; "
            "attacks work in pixel space: put normalisation inside the model (shieldkit.Normalize)"
        )
    return x


def check_labels(labels: object, batch: int, num_classes: int | None, name: str = "y") -> Tensor:
    """Check class labels: an integer tensor ``[B]`` with values in ``[0, num_classes)``.

    With ``num_classes=None`` (not known yet) only the lower end is checked.
    """
    if not isinstance(labels, Tensor):
        raise InvalidInputError(f"{name} must be a torch.Tensor of class indices, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise InvalidInputError(f"{name} must hold integer class indices, got dtype {labels.dtype}")
    if labels.dim() != 1 or labels.shape[0] != batch:
        raise InvalidInputError(f"{name} must have shape [{batch}] (one label per image), got shape {tuple(labels.shape)}")
    low, high = (value.item() for value in torch.aminmax(labels))
    if low < 0 or (num_classes is not None and high >= num_classes):
        classes = f"the model has {num_classes} classes [0, {num_classes})" if num_classes else "classes are numbered from 0"
        raise InvalidInputError(f"{name} has labels in [{low}, {high}] but {classes}")
    return labels.long()


def model_device(model: nn.Module) -> torch.device:
    """The one device a model's parameters and buffers live on (CPU for a stateless model)."""
    return model_placement(model)[0]


def model_placement(model: nn.Module, fallback: torch.dtype = torch.float32) -> tuple[torch.device, torch.dtype]:
    """The one device a model lives on and the floating dtype it computes in (``fallback`` if none)."""
    tensors = [*model.parameters(), *model.buffers()]
    devices = {t.device for t in tensors}
    if len(devices) > 1:
        raise InvalidModelError(
            f"model has parameters on several devices ({', '.join(sorted(map(str, devices)))}); "
            "move it to one device with model.to(device)"
        )
    device = devices.pop() if devices else torch.device("cpu")
    if device.type == "meta":
        raise InvalidModelError("model is on the 'meta' device (no data); load its weights first")
    dtype = next((t.dtype for t in tensors if t.is_floating_point()), fallback)
    return device, dtype


def check_logits(logits: object, batch: int, who: str = "model") -> Tensor:
    """Check a model's output: finite logits ``[B, K]`` with ``K >= 2``."""
    if not isinstance(logits, Tensor):
        from shieldkit.core.outputs import output_kind

        fix = ("; wrap it in shieldkit.core.outputs.LogitsOutput(model), which takes the logits from it"
               if output_kind(logits) is not None else "")
        raise InvalidModelError(f"{who} must return a tensor of logits [B, K], got {type(logits).__name__}{fix}")
    if logits.dim() != 2 or logits.shape[0] != batch or logits.shape[1] < 2:
        raise InvalidModelError(
            f"{who} must return logits of shape [B, K] with B={batch} and K >= 2 classes, "
            f"got shape {tuple(logits.shape)}"
        )
    finite = torch.isfinite(logits.detach()).all(dim=1)
    if not bool(finite.all()):
        first = int((~finite).nonzero()[0])
        raise InvalidModelError(
            f"{who} returned non-finite logits (NaN or inf) for sample {first} of the batch "
            f"({int((~finite).sum())} of {batch} samples); every prediction and loss on them would be meaningless"
        )
    return logits


# ------------------------------------------------------------ parameter checks


def check_int(owner: str, name: str, value: object, minimum: int = 1) -> int:
    """An integer parameter ``>= minimum``, or an error naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidParameterError(f"{owner}: {name} must be an integer >= {minimum}, got {name}={value!r}")
    return value


def check_number(
    owner: str,
    name: str,
    value: object,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    strict: bool = False,
) -> float:
    """A finite real parameter inside ``[minimum, maximum]`` (open at the ends when ``strict``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidParameterError(f"{owner}: {name} must be a finite number, got {name}={value!r}")
    low_ok = minimum is None or (value > minimum if strict else value >= minimum)
    high_ok = maximum is None or (value < maximum if strict else value <= maximum)
    if not (low_ok and high_ok):
        low = "-inf" if minimum is None else minimum
        high = "inf" if maximum is None else maximum
        brackets = "()" if strict else "[]"
        raise InvalidParameterError(
            f"{owner}: {name} must be in {brackets[0]}{low}, {high}{brackets[1]}, got {name}={value!r}"
        )
    return float(value)


def check_choice(owner: str, name: str, value: object, choices: Sequence[str]) -> str:
    """A parameter that must be one of ``choices``."""
    if value not in choices:
        raise InvalidParameterError(
            f"{owner}: {name}={value!r} is not valid; choose one of {', '.join(map(repr, choices))}"
        )
    return value  # type: ignore[return-value]


def check_bool(owner: str, name: str, value: object) -> bool:
    """A parameter that must be ``True`` or ``False`` (not 0/1 or a string)."""
    if not isinstance(value, bool):
        raise InvalidParameterError(f"{owner}: {name} must be True or False, got {name}={value!r}")
    return value


def check_int_between(owner: str, name: str, value: object, low: int, high: int) -> int:
    """An integer parameter in ``[low, high]``, or an error naming it."""
    check_int(owner, name, value, minimum=low)
    if value > high:
        raise InvalidParameterError(f"{owner}: {name} must be between {low} and {high}, got {name}={value!r}")
    return value
