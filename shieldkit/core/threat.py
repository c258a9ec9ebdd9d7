"""The threat model: which perturbations an attacker may make, with the norms and projections that define it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from shieldkit.core.errors import InvalidParameterError
from shieldkit.core.validation import check_bounds

NORMS = ("linf", "l2", "l1", "l0")

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


def linf_box(x: Tensor, eps: float, bounds: tuple[float, float]) -> tuple[Tensor, Tensor]:
    """Each pixel's interval in the L-inf ball around ``x`` and the bounds, both ends inside as the
    attack contract measures (``|end - x| <= eps`` rounded to ``x``'s dtype).

    ``x - eps`` rounds, and can land an ulp outside the ball; a point clamped to such an
    end is stepped back by the contract after the attack chose it. For a deterministic
    model an ulp is nothing, but a model that draws its randomness from the input's bytes
    sees a new draw: the point the attack found fooled would be judged on another one.
    An attack that clamps its iterates to this box returns exactly the points it judged.
    """
    low, high = bounds
    lower, upper = (x - eps).clamp_(min=low), (x + eps).clamp_(max=high)
    limit = torch.tensor(eps, dtype=x.dtype).item()
    for end in (lower, upper):
        for _ in range(4):
            outside = (end - x).abs_() > limit
            if not bool(outside.any()):
                break
            end.copy_(torch.where(outside, torch.nextafter(end, x), end))
    return lower, upper


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


def largest_distance(eps: float, norm: str, other: str, size: int, span: float = 1.0) -> float | None:
    """The largest ``||delta||_other`` a perturbation with ``||delta||_norm <= eps`` can have, in ``size``
    coordinates each at most ``span`` apart (``None`` when no finite bound is known).

    An L-inf budget ``eps`` reaches ``eps * sqrt(size)`` in L2: what an L2 certificate must cover to
    bound an L-inf attack.
    """
    if norm == other:
        return float(eps)
    if other == "l2":
        return {"linf": eps * math.sqrt(size), "l1": float(eps), "l0": span * math.sqrt(eps)}.get(norm)
    return None


#: Default budgets per norm when a bounded attack is created without ``eps``
#: (the usual CIFAR-style values; pass ``eps=0.3`` for MNIST L-inf).
DEFAULT_EPS = {"linf": 8 / 255, "l2": 0.5, "l1": 10.0, "l0": 10.0}

#: how close ``eps * 255`` must come to a whole number for :func:`format_eps` to write it as ``k/255``
_LEVEL_TOLERANCE = 1e-6


def format_eps(value: float) -> str:
    """A budget as a researcher writes it: ``8/255``, ``0.3``, ``0.5``: the one formatter of every ε shown.

    A short decimal (three significant digits or fewer: ``0.1``, ``0.2``, ``0.25``, ``1``) prints as
    itself, although ``0.2`` is also ``51/255``; otherwise a value below 1 within 1e-6 of ``k/255`` for a
    whole ``k >= 1`` prints as ``k/255``; anything else as ``f"{value:g}"``. For display only: what a
    run records (``results.jsonl``, ``summary.json``) stays numeric.
    """
    value = float(value)
    if not math.isfinite(value) or float(f"{value:.3g}") == value:
        return f"{value:g}"
    levels = value * 255
    k = round(levels)
    if 0 < value < 1 and k >= 1 and abs(levels - k) <= _LEVEL_TOLERANCE:
        return f"{k}/255"
    return f"{value:g}"


@dataclass(frozen=True)
class ThreatModel:
    """A perturbation budget: ``||x_adv - x||_norm <= eps`` with pixels inside ``bounds``.

    Args:
        norm: ``"linf"``, ``"l2"``, ``"l1"`` or ``"l0"``.
        eps: the budget; ``None`` means unbounded (minimal-perturbation attacks).
        bounds: the valid pixel range ``(low, high)``.
    """

    norm: str = "linf"
    eps: float | None = None
    bounds: tuple[float, float] = (0.0, 1.0)

    def __post_init__(self):
        object.__setattr__(self, "norm", check_norm(self.norm))
        object.__setattr__(self, "bounds", check_bounds(self.bounds))
        if self.eps is not None:
            try:
                eps = float(self.eps)
            except (TypeError, ValueError):
                raise InvalidParameterError(f"eps must be a number, got {self.eps!r}") from None
            if not math.isfinite(eps) or eps < 0:
                raise InvalidParameterError(f"eps must be finite and >= 0, got eps={self.eps!r}")
            object.__setattr__(self, "eps", eps)

    @property
    def bounded(self) -> bool:
        return self.eps is not None

    def distance(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """Per-sample distance in this norm, ``[B]``."""
        return norm_of(x_adv - x, self.norm)

    def project(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """The closest point to ``x_adv`` inside the epsilon-ball around ``x`` and the bounds."""
        low, high = self.bounds
        if self.eps is None:
            return x_adv.clamp(low, high)
        x_adv = (x + project(x_adv - x, self.norm, self.eps)).clamp(low, high)
        return self._step_back_ulps(x_adv, x)[0] if self.norm == "linf" else x_adv

    def round_inside(self, x_adv: Tensor, x: Tensor, gaps: Tensor | None = None) -> Tensor:
        """``x_adv`` inside the L-inf ball, for a point in the bounds that is at most a little outside.

        ``x + delta`` rounds, so a point projected (or computed by a library) with
        ``|delta| <= eps`` can land an ulp outside. Stepping those coordinates
        back an ulp or two takes a few passes over the batch, fewer than a
        projection; a point further out gets the full projection. ``gaps``
        (``|x_adv - x|``, when the caller has it) saves one pass.
        """
        x_adv, inside = self._step_back_ulps(x_adv, x, gaps)
        return x_adv if inside else self.project(x_adv, x)

    def _step_back_ulps(self, x_adv: Tensor, x: Tensor, gaps: Tensor | None = None) -> tuple[Tensor, bool]:
        eps = self.eps_in(x_adv.dtype)
        gaps = (x_adv - x).abs_() if gaps is None else gaps
        for _ in range(4):
            if gaps.amax().item() <= eps:
                return x_adv, True
            # Adding 1 * (next - x_adv) gives next exactly, adding 0 * (...) changes nothing;
            # several times faster than torch.where on CPU.
            x_adv = x_adv + torch.nextafter(x_adv, x).sub_(x_adv).mul_(gaps > self.eps)
            gaps = (x_adv - x).abs_()
        return x_adv, gaps.amax().item() <= eps

    def cast_inside(self, x_adv: Tensor, x: Tensor) -> Tensor:
        """``x_adv``, computed in a wider dtype than ``x``'s (a library run in float32 on a half-precision
        model), in ``x``'s dtype without leaving the L-inf ball, measured exactly.

        Rounding to nearest moves each coordinate by up to half an ulp of ``x``'s dtype
        (2e-3 in bfloat16 at 1.0), which carries a pixel at the edge of the ball out of
        it: 0.1002 for eps 0.1. The attack contract compares distances in the dtype,
        where ``x_adv - x`` rounds too and hides that; here the gap is measured in the
        wide dtype (the difference of two float16 or bfloat16 numbers in [0, 1] is exact
        in float32) and a coordinate outside is moved one ulp back towards ``x``.
        Other norms, and unbounded threat models, are only rounded.
        """
        rounded = x_adv.to(x.dtype)
        if self.eps is None or self.norm != "linf" or x_adv.dtype == x.dtype:
            return rounded
        wide = x.to(x_adv.dtype)
        for _ in range(2):  # one ulp back suffices for a point that was inside before rounding
            outside = (rounded.to(x_adv.dtype) - wide).abs_() > self.eps
            if not bool(outside.any()):
                break
            rounded = torch.where(outside, torch.nextafter(rounded, x), rounded)
        return rounded

    def eps_in(self, dtype: torch.dtype) -> float:
        """``eps`` rounded to ``dtype``: what a comparison of ``dtype`` tensors with ``eps`` compares against."""
        return torch.tensor(self.eps, dtype=dtype).item()
