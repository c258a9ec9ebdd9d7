"""Input validation, the model-state guard, call counting, norms and projections.

Everything the :class:`~shieldkit.attack.Attack` base class checks lives here, so
that algorithms stay short and every attack, native or wrapped, gets the same
guarantees.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from shieldkit.errors import AttackContractError, InvalidInputError, InvalidModelError, InvalidParameterError

NORMS = ("linf", "l2", "l1", "l0")
BOUNDS_TOLERANCE = 1e-6


# --------------------------------------------------------------------------- norms


def check_norm(norm: str, allowed: Sequence[str] = NORMS, owner: str = "") -> str:
    """Return ``norm`` normalised ("Linf", "inf" -> "linf") or raise naming the valid ones."""
    aliases = {"inf": "linf", "li": "linf", "l_inf": "linf", "2": "l2", "1": "l1", "0": "l0"}
    key = str(norm).lower().replace(" ", "")
    key = aliases.get(key, key)
    if key not in allowed:
        prefix = f"{owner}: " if owner else ""
        raise InvalidParameterError(
            f"{prefix}norm={norm!r} is not supported; choose one of {', '.join(allowed)}"
        )
    return key


def norm_of(delta: Tensor, norm: str) -> Tensor:
    """Per-sample norm of a batch of perturbations ``[B, ...] -> [B]``."""
    flat = delta.reshape(delta.shape[0], -1)
    if norm == "linf":
        return flat.abs().amax(dim=1) if flat.shape[1] else flat.new_zeros(flat.shape[0])
    if norm == "l2":
        return flat.norm(p=2, dim=1)
    if norm == "l1":
        return flat.abs().sum(dim=1)
    if norm == "l0":
        return (flat != 0).sum(dim=1).to(delta.dtype)
    raise InvalidParameterError(f"norm={norm!r} is not one of {', '.join(NORMS)}")


def project(delta: Tensor, norm: str, eps: float) -> Tensor:
    """Project each perturbation of a batch onto the ``norm`` ball of radius ``eps``."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    flat = delta.reshape(delta.shape[0], -1)
    if norm == "l2":
        lengths = flat.norm(p=2, dim=1, keepdim=True)
        factor = torch.where(lengths > eps, eps / lengths.clamp_min(1e-12), torch.ones_like(lengths))
        return (flat * factor).view_as(delta)
    if norm == "l1":
        return _project_l1(flat, eps).view_as(delta)
    if norm == "l0":
        keep = int(eps)
        if keep >= flat.shape[1]:
            return delta
        top = flat.abs().topk(keep, dim=1).indices
        mask = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, top, True)
        return (flat * mask).view_as(delta)
    raise InvalidParameterError(f"norm={norm!r} is not one of {', '.join(NORMS)}")


def _project_l1(flat: Tensor, eps: float) -> Tensor:
    # Duchi et al. 2008: soft-threshold by the value that makes the L1 norm eps.
    magnitude = flat.abs()
    inside = magnitude.sum(dim=1) <= eps
    if inside.all():
        return flat
    sorted_mag, _ = magnitude.sort(dim=1, descending=True)
    cumulative = sorted_mag.cumsum(dim=1)
    ranks = torch.arange(1, flat.shape[1] + 1, device=flat.device, dtype=flat.dtype)
    candidates = sorted_mag - (cumulative - eps) / ranks
    rho = (candidates > 0).sum(dim=1, keepdim=True).clamp_min(1)
    theta = (cumulative.gather(1, rho - 1) - eps) / rho.to(flat.dtype)
    shrunk = flat.sign() * (magnitude - theta).clamp_min(0)
    return torch.where(inside[:, None], flat, shrunk)


# ---------------------------------------------------------------------- validation


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
        raise InvalidModelError(f"{who} must return a tensor of logits [B, K], got {type(logits).__name__}")
    if logits.dim() != 2 or logits.shape[0] != batch or logits.shape[1] < 2:
        raise InvalidModelError(
            f"{who} must return logits of shape [B, K] with B={batch} and K >= 2 classes, "
            f"got shape {tuple(logits.shape)}"
        )
    return logits


# ----------------------------------------------------------------- state guard


def _unchanged(tensor: Tensor, saved: Tensor) -> bool:
    """Whether ``tensor`` still holds ``saved``'s shape, dtype, device and values.

    NaN counts as changed; restoring it is harmless.
    """
    same_kind = tensor.shape == saved.shape and tensor.dtype == saved.dtype and tensor.device == saved.device
    return same_kind and torch.equal(tensor, saved)


class ModelStateGuard:
    """Puts a model in eval mode for an attack and restores it exactly afterwards.

    Restored on exit: every module's ``training`` flag, every parameter object,
    its ``requires_grad``, ``.grad`` (the same tensor object, with its old values)
    and storage, and every buffer (BatchNorm statistics included). Libraries that
    switch modes or zero gradients without restoring them (ART's estimators do)
    cannot leave a trace on the user's model. Parameters are frozen during the
    attack, so only the input gets gradients.

    Parameter *values* are watched, not copied: a copy of every parameter per
    call would add the model's size to peak memory and, on a small model, cost
    more than the rest of the wrapper together. A parameter whose storage was
    replaced (``param.data = ...``) gets its own storage back, values intact.
    A parameter written in place moves autograd's version counter: nothing can
    undo that without a copy, so exit raises :class:`AttackContractError` naming
    the parameters (an attack must never change the model). A write through
    ``param.data`` bypasses the counter; the conformance kit
    (:func:`shieldkit.testing.check_attack`) compares every value before and
    after, so a registered attack that writes that way fails conformance.

    Args:
        model: the model to guard.
        owner: who runs inside (an attack's name), for the error message.
    """

    def __init__(self, model: nn.Module, owner: str = ""):
        self.model = model
        self.owner = owner

    def __enter__(self) -> nn.Module:
        model = self.model
        modules = list(model.modules())
        self._training = [(m, m.training) for m in modules]
        self._params = []
        self._buffers = []
        for module in modules:
            for name, p in module._parameters.items():
                if p is not None:
                    grad = None if p.grad is None else (p.grad, p.grad.detach().clone())
                    self._params.append((module, name, p, p.requires_grad, grad, p.data, p._version))
            for name, b in module._buffers.items():
                if b is not None:
                    self._buffers.append((module, name, b, b.detach().clone()))
        model.eval()
        for _, _, param, *_ in self._params:
            param.requires_grad_(False)
        return model

    def __exit__(self, exc_type, exc, traceback) -> None:
        written = []
        # Put back the very same tensor objects (optimisers and hooks hold references),
        # then their storage and values.
        with torch.no_grad():
            for module, training in self._training:
                if module.training is not training:
                    module.training = training
            for module, name, param, requires_grad, grad, data, version in self._params:
                if module._parameters.get(name) is not param:
                    module._parameters[name] = param
                if param.data_ptr() != data.data_ptr() or param.shape != data.shape or param.dtype != data.dtype:
                    param.data = data
                if param._version != version:
                    written.append((module, name))
                param.requires_grad_(requires_grad)
                if grad is None:
                    if param.grad is not None:
                        param.grad = None
                else:
                    grad_tensor, grad_values = grad
                    if not _unchanged(grad_tensor, grad_values):
                        grad_tensor.data = grad_values
                    param.grad = grad_tensor
            for module, name, buffer, values in self._buffers:
                module._buffers[name] = buffer
                if not _unchanged(buffer, values):
                    buffer.data = values
        self._training, self._params, self._buffers = [], [], []
        if written and exc_type is None:  # an error already on its way out is the one to report
            who = self.owner or "the guarded code"
            prefixes = {id(module): prefix for prefix, module in self.model.named_modules()}
            names = sorted({".".join(filter(None, (prefixes.get(id(m)), n))) for m, n in written})
            raise AttackContractError(
                f"{who} wrote to the model's parameters in place ({', '.join(names)}); "
                "an attack must not change the model, and shieldkit does not copy parameters to undo it"
            )


def snapshot_state(model: nn.Module) -> dict:
    """A comparable record of everything the guard restores (for tests and the conformance kit)."""
    return {
        "training": {name: m.training for name, m in model.named_modules()},
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
        "grad": {name: None if p.grad is None else p.grad.detach().clone() for name, p in model.named_parameters()},
        "params": {name: p.detach().clone() for name, p in model.named_parameters()},
        "buffers": {name: b.detach().clone() for name, b in model.named_buffers()},
    }


def compare_state(before: dict, after: dict) -> list[str]:
    """What differs between two :func:`snapshot_state` records, one line per difference."""
    problems = []
    for key in ("training", "requires_grad"):
        for name, value in before[key].items():
            if after[key].get(name) != value:
                problems.append(f"{key} of {name or 'model'!r} was {value}, is {after[key].get(name)}")
    for key in ("grad", "params", "buffers"):
        for name, value in before[key].items():
            new = after[key].get(name)
            if value is None or new is None:
                if (value is None) != (new is None):
                    problems.append(f"{key} of {name!r} was {'None' if value is None else 'set'}, is {'None' if new is None else 'set'}")
            elif value.shape != new.shape or not torch.equal(value, new):
                diff = (value.float() - new.float()).abs().max().item() if value.shape == new.shape else float("nan")
                problems.append(f"{key} of {name!r} changed (max abs difference {diff:.3g})")
    return problems


# ------------------------------------------------------------------- counting


class CallCounter:
    """Counts forward passes, images forwarded and backward passes through a model.

    A forward hook counts calls; it also hooks the output tensor so that each
    backward pass through the model's output is counted once.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.forwards = 0
        self.queries = 0
        self.backwards = 0
        self.enabled = True
        self._handle = None

    def _on_forward(self, module, inputs, output) -> None:
        if not self.enabled:
            return
        self.forwards += 1
        if inputs and isinstance(inputs[0], Tensor) and inputs[0].dim() > 0:
            self.queries += int(inputs[0].shape[0])
        if isinstance(output, Tensor) and output.requires_grad:
            try:
                output.register_hook(self._on_backward)
            except RuntimeError:  # e.g. inside torch.func transforms
                pass

    def _on_backward(self, grad: Tensor) -> None:
        if self.enabled:
            self.backwards += 1

    def __enter__(self) -> CallCounter:
        self._handle = self.model.register_forward_hook(self._on_forward)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


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
