"""Hue and saturation shift search on colour images (Hosseini & Poovendran 2018)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from shieldkit.core.attack import Attack
from shieldkit.core.errors import InvalidInputError
from shieldkit.core.losses import fooled
from shieldkit.core.validation import check_choice, check_int

SEARCHES = ("random", "grid")
#: pixels evaluated per forward pass at most (several queries per sample are batched together).
_CHUNK_ELEMENTS = 1 << 22


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

    Queries are batched: several consecutive queries of each sample go through
    the model in one forward pass, and the first that fools is kept
    (``info["queries_used"]`` counts up to it). No sample ever gets more than
    ``queries``; ``AttackResult.queries`` counts every image forwarded.

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
        query = 0
        while query < self.queries and pending.numel():
            count = pending.numel()
            # Several queries per sample in one forward: tiny batches are dominated by call overhead.
            chunk = max(1, min(self.queries - query, _CHUNK_ELEMENTS // (count * x[0].numel())))
            index = torch.arange(query, query + chunk, device=x.device)
            if self.search == "random":
                hue_shift = torch.rand(count, chunk, dtype=x.dtype, device=x.device)
                reach = (index + 1).to(x.dtype) / self.queries
                saturation_shift = (2 * torch.rand(count, chunk, dtype=x.dtype, device=x.device) - 1) * reach
            else:
                hue_shift = grid_hue[index].expand(count, chunk)
                saturation_shift = grid_saturation[index].expand(count, chunk)
            repeated = hsv[pending].unsqueeze(1).expand(count, chunk, *x.shape[1:]).reshape(-1, *x.shape[1:])
            rgb = hsv_to_rgb(shift_hue_saturation(repeated, hue_shift.reshape(-1), saturation_shift.reshape(-1)))
            origin = x[pending].unsqueeze(1).expand(count, chunk, *x.shape[1:]).reshape(-1, *x.shape[1:])
            candidates = self.project(low + (high - low) * rgb, origin)
            done = fooled(model(candidates), labels[pending].repeat_interleave(chunk), targeted).view(count, chunk)
            hit = done.any(dim=1)
            first = done.to(torch.uint8).argmax(dim=1)  # the first query of the chunk that fooled
            chosen = candidates.view(count, chunk, *x.shape[1:])[torch.arange(count, device=x.device), first]
            x_adv[pending[hit]] = chosen[hit]
            used[pending[hit]] = query + first[hit] + 1
            pending = pending[~hit]
            query += chunk
        return x_adv, {"queries_used": used.cpu()}
