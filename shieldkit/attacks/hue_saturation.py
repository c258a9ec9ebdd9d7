"""Hue and saturation shift search on colour images (Hosseini & Poovendran 2018)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from shieldkit.attack import Attack
from shieldkit.attacks._losses import fooled
from shieldkit.errors import InvalidInputError
from shieldkit.guard import check_choice, check_int

SEARCHES = ("random", "grid")


def rgb_to_hsv(rgb: Tensor) -> Tensor:
    """RGB in ``[0, 1]`` to HSV in ``[0, 1]`` (hue as a fraction of a turn).

    Shape:
        ``[B, 3, H, W] -> [B, 3, H, W]``.
    """
    red, green, blue = rgb.unbind(dim=1)
    value, which = rgb.max(dim=1)
    chroma = value - rgb.min(dim=1).values
    saturation = torch.where(value > 0, chroma / value.clamp_min(1e-12), torch.zeros_like(value))
    safe = chroma.clamp_min(1e-12)
    hue = torch.where(
        which == 0,
        ((green - blue) / safe) % 6,
        torch.where(which == 1, (blue - red) / safe + 2, (red - green) / safe + 4),
    )
    hue = torch.where(chroma > 0, hue / 6, torch.zeros_like(hue)) % 1.0
    return torch.stack((hue, saturation, value), dim=1)


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """HSV in ``[0, 1]`` to RGB in ``[0, 1]``: ``V - V*S*clamp(min(k, 4-k), 0, 1)``, ``k = (n + 6H) mod 6``.

    Shape:
        ``[B, 3, H, W] -> [B, 3, H, W]``.
    """
    hue, saturation, value = hsv[:, 0:1], hsv[:, 1:2], hsv[:, 2:3]
    offsets = torch.tensor([5.0, 3.0, 1.0], dtype=hsv.dtype, device=hsv.device).view(1, 3, 1, 1)
    k = (offsets + 6 * hue) % 6
    return value - value * saturation * torch.minimum(k, 4 - k).clamp(0, 1)


def shift_hue_saturation(hsv: Tensor, hue_shift: Tensor, saturation_shift: Tensor) -> Tensor:
    """Rotate the hue and add to the saturation (clipped to ``[0, 1]``) of each image; value unchanged.

    Shape:
        ``hsv`` ``[B, 3, H, W]``, shifts ``[B]`` -> ``[B, 3, H, W]``.
    """
    hue = (hsv[:, 0] + hue_shift[:, None, None]) % 1.0
    saturation = (hsv[:, 1] + saturation_shift[:, None, None]).clamp(0, 1)
    return torch.stack((hue, saturation, hsv[:, 2]), dim=1)


def grid_shifts(queries: int) -> tuple[Tensor, Tensor]:
    """``queries`` (hue, saturation) shifts on a grid, smallest saturation change first.

    The hue circle gets ``ceil(sqrt(queries))`` equally spaced shifts; saturation
    shifts go 0, +d, -d, +2d, ... up to +-1. The identity (0, 0) is left out.
    """
    steps = max(2, math.ceil(math.sqrt(queries)))
    hues = [index / steps for index in range(steps)]
    levels = [0.0]
    for index in range(1, steps):
        magnitude = index / (steps - 1)
        levels += [magnitude, -magnitude]
    pairs = [(h, s) for s in levels for h in hues if (h, s) != (0.0, 0.0)]
    while len(pairs) < queries:  # tiny budgets only: repeat the grid
        pairs += pairs
    hue, saturation = zip(*pairs[:queries])
    return torch.tensor(hue), torch.tensor(saturation)


class HueSaturation(Attack):
    """Shifts the hue and saturation of colour images until the model is fooled.

    Each query applies one (hue rotation, saturation shift) pair to every sample
    still not fooled; the value (brightness) channel is kept, so shapes and
    shading survive. ``search="random"`` draws the hue shift uniformly from the
    whole circle and the saturation shift uniformly from ``[-i/N, i/N]`` at query
    ``i`` of ``N`` (the paper's schedule: small saturation changes first);
    ``search="grid"`` walks a fixed grid with the smallest saturation changes
    first. A sample that no query fools is returned unchanged.

    Args:
        queries: model queries per sample at most (the paper uses 1000).
        search: ``"random"`` or ``"grid"``.
        **common: ``eps`` (optional; the result is then projected onto the ball),
            ``norm`` (``"linf"`` or ``"l2"``), ``bounds``, ``seed``.

    Shape:
        images must have 3 (RGB) channels.

    Reference:
        Hosseini, Poovendran. Semantic Adversarial Examples. CVPR Workshops 2018.
    """

    family = "hue_saturation"
    norms = ("linf", "l2")
    bounded = False
    access = "decision"
    randomized = True
    # The registry-wide conformance test hands ``shape`` to check_attack (this attack needs colour).
    smoke_params = {"queries": 20, "shape": (6, 3, 16, 16)}

    def __init__(self, *, queries: int = 1000, search: str = "random", **common):
        super().__init__(**common)
        owner = self.name
        self.queries = check_int(owner, "queries", queries, minimum=1)
        self.search = check_choice(owner, "search", search, SEARCHES)

    @torch.no_grad()
    def _run(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None) -> tuple[Tensor, dict]:
        if x.shape[1] != 3:
            raise InvalidInputError(
                f"{self.name}: x must be RGB images [B, 3, H, W] (hue and saturation need colour), "
                f"got {x.shape[1]} channel(s)"
            )
        targeted = target is not None
        labels = target if targeted else y
        low, high = self.bounds
        hsv = rgb_to_hsv((x - low) / (high - low))
        if self.search == "grid":
            grid_hue, grid_saturation = (t.to(x.device, x.dtype) for t in grid_shifts(self.queries))
        x_adv = x.clone()
        used = torch.full((x.shape[0],), self.queries, dtype=torch.long, device=x.device)
        pending = torch.arange(x.shape[0], device=x.device)
        for query in range(self.queries):
            count = pending.numel()
            if self.search == "random":
                hue_shift = torch.rand(count, dtype=x.dtype, device=x.device)
                reach = (query + 1) / self.queries
                saturation_shift = (2 * torch.rand(count, dtype=x.dtype, device=x.device) - 1) * reach
            else:
                hue_shift = grid_hue[query].expand(count)
                saturation_shift = grid_saturation[query].expand(count)
            rgb = hsv_to_rgb(shift_hue_saturation(hsv[pending], hue_shift, saturation_shift))
            candidate = self.project(low + (high - low) * rgb, x[pending])
            done = fooled(model(candidate), labels[pending], targeted)
            x_adv[pending[done]] = candidate[done]
            used[pending[done]] = query + 1
            pending = pending[~done]
            if pending.numel() == 0:
                break
        return x_adv, {"queries_used": used.cpu()}
