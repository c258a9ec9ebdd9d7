"""Square Attack (Andriushchenko et al., ECCV 2020): score-based random search with square-shaped updates."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from shieldkit.core.attack import Attack
from shieldkit.core.losses import fooled, margin
from shieldkit.core.threat import linf_box
from shieldkit.core.validation import check_int, check_int_between, check_number

#: Iterations (of the paper's 10,000) after which the square's share of the image halves again.
HALVING_POINTS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
#: Draws of new signs for a square that would leave the image unchanged (a wasted query) before giving up.
REDRAWS = 8


def square_share(p_init: float, iteration: int, queries: int) -> float:
    """The share of pixels the square covers at ``iteration``: the paper's schedule rescaled to ``queries``.

    ``p_init`` until iteration 10 of 10,000, then halved after 10, 50, 200, 500, 1000,
    2000, 4000, 6000 and 8000 (``p_init / 512`` at the end), with ``iteration``
    measured as a share of the budget (as AutoAttack does for its 5000 queries).
    """
    scaled = int(iteration / queries * 10000)
    return p_init / 2 ** sum(scaled > point for point in HALVING_POINTS)


def _rectangle_bump(rows: int, cols: int, like: Tensor) -> Tensor:
    """Concentric rectangles around the centre, ring ``k`` weighted ``1 / (k + 1)^2``, unit L2 norm."""
    bump = like.new_zeros(rows, cols)
    top, left = rows // 2, cols // 2
    for ring in range(max(top, left) + 1):
        bump[max(top - ring, 0):top + ring + 1, max(left - ring, 0):left + ring + 1] += 1.0 / (ring + 1) ** 2
    return bump / bump.norm().clamp_min(1e-12)


def l2_square_patterns(size: int, like: Tensor) -> Tensor:
    """The two L2 update patterns of side ``size``, ``[2, size, size]``: a bump over a negated bump, and its transpose.

    Each has unit L2 norm; the paper picks one of the two at random for every update.
    """
    half = size // 2
    pattern = like.new_zeros(size, size)
    pattern[:half] = _rectangle_bump(half, size, like) if half else 0.0
    pattern[half:] = -_rectangle_bump(size - half, size, like)
    pattern = pattern / pattern.norm().clamp_min(1e-12)
    return torch.stack([pattern, pattern.t()])


def _window_masks(count: int, size: int, height: int, width: int, device) -> Tensor:
    """``[count, 1, H, W]`` bool: one ``size x size`` square per sample, at a uniform random position."""
    top = torch.randint(0, height - size + 1, (count,), device=device)
    left = torch.randint(0, width - size + 1, (count,), device=device)
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + size)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + size)
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


def _random_signs(*shape: int, like: Tensor) -> Tensor:
    return torch.randint(0, 2, shape, device=like.device).to(like.dtype).mul_(2).sub_(1)


class Square(Attack):
    """Random search over square-shaped changes at the corners of the ball; scores only, no gradients.

    L-inf: start from vertical stripes of ``+-eps``; each iteration draws, for every
    sample still unbroken, a square at a random position and sets it to ``x +- eps``
    (one random sign per channel). L2: start from a grid of bump-shaped squares
    scaled to norm ``eps``; each iteration moves the perturbation's mass in a random
    square (and a second one it empties) into a new bump pattern, keeping the norm
    at ``eps``. A candidate is kept when it raises the margin loss ``max_{j!=y} z_j -
    z_y`` (targeted: ``z_t - max_{j!=t} z_j``). The square's side follows the paper's
    schedule of ``p`` (``square_share``), rescaled to the query budget.

    Each sample gets at most ``queries`` forward passes of itself (the start included)
    and leaves the batch as soon as it is fooled; ``info["queries"]`` (``[B]`` int64)
    says how many each one used. Square positions are drawn per sample (the reference
    code draws one per batch), so a sample's search does not depend on its neighbours.

    With ``probe``, the search ends after its first ``probe`` queries unless by then it
    has fooled a sample of the batch; the schedule stays that of the whole budget, so
    the probe is exactly the start of the full search. In an evaluation Square comes
    after the white-box attacks as the black-box check against masked gradients
    (Carlini et al. 2019, section 5): on a model whose gradients work, the white-box
    attacks have already found what Square would find and the probe fools nothing; a
    model whose gradients mislead lets Square fool samples early, and then the search
    gets its whole budget. ``info["probe_stopped"]`` says whether the probe ended it.

    Args:
        queries: forward passes per sample at most (AutoAttack: 5000).
        p_init: initial share of the image's pixels in the square (AutoAttack: 0.8).
        probe: queries after which a search that has fooled no sample ends (``None``:
            always the whole budget); at most ``queries``.
        **common: ``eps``, ``norm`` (``"linf"`` or ``"l2"``), ``bounds``, ``seed``.

    Reference:
        Andriushchenko, Croce, Flammarion, Hein. Square Attack: a query-efficient
        black-box adversarial attack via random search. ECCV 2020.
    """

    family = "square"
    norms = ("linf", "l2")
    access = "score"
    randomized = True
    smoke_params = {"queries": 40}

    def __init__(self, *, queries: int = 5000, p_init: float = 0.8, probe: int | None = None, **common):
        super().__init__(**common)
        owner = self.name
        self.queries = check_int(owner, "queries", queries, minimum=1)
        self.p_init = check_number(owner, "p_init", p_init, 0.0, 1.0, strict=True)
        self.probe = None if probe is None else check_int_between(owner, "probe", probe, 1, self.queries)

    @torch.no_grad()
    def _run(self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None) -> tuple[Tensor, dict]:
        targeted = target is not None
        labels = target if targeted else y
        low, high = self.bounds
        # L-inf candidates take each pixel's end of the ball exactly (x +- eps, clipped, an ulp inside
        # where x +- eps rounds outside), so the contract returns the very points that were judged
        box = linf_box(x, self.eps, self.bounds) if self.norm == "linf" else None
        best = self._start(x, box)
        logits = model(best)
        best_value = margin(logits, labels, targeted)
        used = torch.ones(x.shape[0], dtype=torch.long, device=x.device)
        active = (~fooled(logits, labels, targeted)).nonzero().squeeze(1)
        height, width = x.shape[2], x.shape[3]
        probe_stopped = False
        for iteration in range(1, self.queries):
            if active.numel() == 0:
                break
            if iteration == self.probe and active.numel() == x.shape[0]:
                probe_stopped = True  # nothing fooled in the probe: the white-box attacks before it stand
                break
            share = square_share(self.p_init, iteration - 1, self.queries)
            best_rows = best[active]
            if self.norm == "linf":
                side = min(max(round(math.sqrt(share * height * width)), 1), height - 1 if height > 1 else 1, width)
                candidate = self._linf_candidate(box[0][active], box[1][active], best_rows, side)
            else:
                side = max(round(math.sqrt(share * height * width)), 3)
                side = min(side + 1 if side % 2 == 0 else side, height, width)
                candidate = self._l2_candidate(x[active], best_rows, side, low, high)
            logits = model(candidate)
            value = margin(logits, labels[active], targeted)
            used[active] += 1
            hit = fooled(logits, labels[active], targeted)
            better = (value > best_value[active]) | hit
            best[active[better]] = candidate[better]
            best_value[active[better]] = value[better]
            active = active[~hit]
        return best, {"queries": used.cpu(), "probe_stopped": probe_stopped}

    def _start(self, x: Tensor, box: tuple[Tensor, Tensor] | None) -> Tensor:
        """The paper's starting points: L-inf vertical stripes of +-eps; L2 a grid of signed bumps of norm eps."""
        low, high = self.bounds
        count, channels, height, width = x.shape
        if box is not None:
            return torch.where(_random_signs(count, channels, 1, width, like=x) > 0, box[1], box[0])
        delta = torch.zeros_like(x)
        side = max(height // 5, 1)
        offset = (height - 5 * side) // 2 if height >= 5 else 0
        patterns = l2_square_patterns(side, x)
        for top in range(offset, offset + side * (height // side), side):
            for left in range(offset, min(offset + side * (width // side), width - side + 1), side):
                if top + side > height:
                    continue
                chosen = patterns[torch.randint(0, 2, (count,), device=x.device)][:, None]
                delta[:, :, top:top + side, left:left + side] += chosen * _random_signs(count, channels, 1, 1, like=x)
        return (x + self.eps * _unit_l2(delta)).clamp_(low, high)

    def _linf_candidate(self, lower: Tensor, upper: Tensor, best: Tensor, side: int) -> Tensor:
        """``best`` with one random square per sample set to ``x +- eps`` (a sign per channel), clipped:
        ``upper`` or ``lower``, the ends of each pixel's interval."""
        count, channels, height, width = best.shape
        window = _window_masks(count, side, height, width, best.device)
        signs = _random_signs(count, channels, 1, 1, like=best)
        candidate = torch.where(window, torch.where(signs > 0, upper, lower), best)
        # A square that already holds the drawn values would waste a query: draw again for those samples
        # (with one channel the only other draw is the flipped sign, so flip it at once).
        pending = torch.arange(count, device=best.device)
        for _ in range(1 if channels == 1 else REDRAWS):
            same = (candidate[pending] - best[pending]).abs().flatten(1).amax(dim=1) < 1e-7
            pending = pending[same]
            if pending.numel() == 0:
                break
            signs = -signs[pending] if channels == 1 else _random_signs(pending.numel(), channels, 1, 1, like=best)
            candidate[pending] = torch.where(window[pending], torch.where(signs > 0, upper[pending], lower[pending]),
                                             best[pending])
        return candidate

    def _l2_candidate(self, x: Tensor, best: Tensor, side: int, low: float, high: float) -> Tensor:
        """``best`` with the perturbation in a random square (and a second one, emptied) reshaped into a new bump.

        The new square gets a signed bump plus its old content (normalised), scaled so
        that the two squares' former mass plus whatever the budget has left goes into
        it; the whole perturbation is then rescaled to norm ``eps`` and clipped.
        """
        count, channels, height, width = x.shape
        delta = best - x
        first = _window_masks(count, side, height, width, x.device)
        second = _window_masks(count, side, height, width, x.device)
        first_all = first.expand(-1, channels, -1, -1)
        old = delta.masked_select(first_all).view(count, channels, side, side)
        old_norm = old.flatten(2).norm(dim=2).view(count, channels, 1, 1)
        budget_left = (self.eps ** 2 - delta.flatten(1).square().sum(dim=1)).clamp_min(0).view(count, 1, 1, 1)
        both_norm = (delta * (first | second)).flatten(1).norm(dim=1).view(count, 1, 1, 1)
        patterns = l2_square_patterns(side, x)[torch.randint(0, 2, (count,), device=x.device)][:, None]
        new = patterns * _random_signs(count, channels, 1, 1, like=x) + old / (old_norm + 1e-12)
        new = new / new.flatten(2).norm(dim=2).view(count, channels, 1, 1).clamp_min(1e-12)
        new = new * (budget_left / channels + both_norm.square()).sqrt()
        delta = delta.masked_fill(second, 0.0).masked_scatter(first_all, new)
        return (x + self.eps * _unit_l2(delta)).clamp_(low, high)


def _unit_l2(delta: Tensor) -> Tensor:
    """Each row of ``delta`` scaled to L2 norm 1."""
    return delta / delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (delta.dim() - 1))
